"""Apply Lockgate's Prefect environment, changing only what differs from the server.

Work pools (deployments/pools.yaml, with their base job templates), the per-team GPU quota
(deployments/gpu-quota.csv, one global concurrency limit per team) and the deployments of
prefect.yaml with their triggers (automations). Each is read from the server first and
written only when it is missing or differs, because a blind ``prefect deploy`` re-creates
schedules (moving interval anchors and re-planning scheduled runs) and automations (new ids,
trigger state lost) every time. A changed deployment is applied by ``prefect deploy`` itself.

Run through deployments/apply.sh, which sets the environment prefect.yaml refers to.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import (
    GlobalConcurrencyLimitCreate,
    GlobalConcurrencyLimitUpdate,
    WorkPoolCreate,
    WorkPoolUpdate,
)
from prefect.exceptions import ObjectNotFound
from prefect.flows import load_flow_from_entrypoint
from prefect.utilities.callables import parameter_schema
from prefect.workers.utilities import get_default_base_job_template_for_infrastructure_type
from pydantic import TypeAdapter

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "deployments"
_ENV_TEMPLATE = re.compile(r"\{\{\s*\$(\w+)\s*\}\}")


def render_env(value: Any) -> Any:
    """``{{ $VAR }}`` in prefect.yaml replaced from the environment, as ``prefect deploy`` does."""
    if isinstance(value, str):
        whole = _ENV_TEMPLATE.fullmatch(value.strip())
        if whole:
            return os.environ.get(whole.group(1), value)
        return _ENV_TEMPLATE.sub(lambda m: os.environ.get(m.group(1), m.group(0)), value)
    if isinstance(value, dict):
        return {k: render_env(v) for k, v in value.items()}
    if isinstance(value, list):
        return [render_env(v) for v in value]
    return value


def _log(verb: str, what: str) -> None:
    print(f"apply: {verb:9} {what}", flush=True)


async def apply_pools(client: Any) -> None:
    pools = yaml.safe_load((HERE / "pools.yaml").read_text())
    for name, spec in pools.items():
        if "base_job_template" in spec:
            template = json.loads((HERE / spec["base_job_template"]).read_text())
        else:
            template = await get_default_base_job_template_for_infrastructure_type(spec["type"])
        limit = spec.get("concurrency_limit")
        try:
            pool = await client.read_work_pool(name)
        except ObjectNotFound:
            await client.create_work_pool(
                WorkPoolCreate(name=name, type=spec["type"], base_job_template=template, concurrency_limit=limit)
            )
            _log("created", f"work pool {name} ({spec['type']})")
            continue
        if pool.type != spec["type"]:
            sys.exit(
                f"apply: work pool {name} is of type {pool.type} on the server, {spec['type']} here; delete it first"
            )
        if pool.base_job_template == template and pool.concurrency_limit == limit:
            _log("unchanged", f"work pool {name}")
            continue
        await client.update_work_pool(name, WorkPoolUpdate(base_job_template=template, concurrency_limit=limit))
        _log("updated", f"work pool {name}")


async def apply_quota(client: Any) -> None:
    with (HERE / "gpu-quota.csv").open() as f:
        rows = [r for r in csv.reader(f) if r and r[0].strip() and not r[0].startswith("#")]
    for team, gpus in rows:
        name, limit = f"gpu-{team.strip()}", int(gpus)
        try:
            current = await client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))
            _log("created", f"concurrency limit {name} ({limit})")
            continue
        if current.limit == limit and current.active:
            _log("unchanged", f"concurrency limit {name}")
            continue
        await client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=limit, active=True))
        _log("updated", f"concurrency limit {name} ({limit})")


def _schedule(spec: dict[str, Any]) -> dict[str, Any]:
    """The parts of a schedule prefect.yaml decides (the server adds anchors, ids, defaults)."""
    keys = ("cron", "interval", "rrule", "timezone")
    out = {k: spec[k] for k in keys if spec.get(k) is not None}
    out.setdefault("timezone", "UTC")  # the server's default
    if "interval" in out:
        out["interval"] = float(out["interval"])
    return out


def _trigger(spec: dict[str, Any]) -> dict[str, Any]:
    """A deployment trigger as the server keeps it in its automation."""
    return {
        "match": spec.get("match", {}),
        "match_related": spec.get("match_related", {}) or {},
        "after": sorted(spec.get("after", [])),
        "expect": sorted(spec.get("expect", [])),
        "for_each": sorted(spec.get("for_each", [])),
        "posture": spec.get("posture", "Reactive"),
        "threshold": spec.get("threshold", 1),
        "within": TypeAdapter(timedelta).validate_python(spec.get("within", 0)).total_seconds(),
        "parameters": spec.get("parameters"),
        "enabled": _flag(spec.get("enabled", True)),
    }


def _flag(value: Any) -> bool:
    """A trigger's ``enabled``, which may come from an environment template as text."""
    return value.strip().lower() == "true" if isinstance(value, str) else bool(value)


def desired_deployment(spec: dict[str, Any], pull: list[Any]) -> dict[str, Any]:
    """What prefect.yaml asks the server to hold for one deployment (env templates rendered)."""
    spec = render_env(spec)
    flow = load_flow_from_entrypoint(str(ROOT / spec["entrypoint"]))
    concurrency = spec.get("concurrency_limit")
    if isinstance(concurrency, dict):
        concurrency = (concurrency.get("limit"), concurrency.get("collision_strategy"))
    return {
        "flow": flow.name,
        # No "version": `prefect deploy` infers it from git where the checkout has a remote (a
        # clone: the commit) and from the flow file's hash elsewhere, so comparing it made every
        # apply in a clone an update. Workers run the checkout's code, whatever the version says.
        "description": spec.get("description") or flow.description,
        "entrypoint": spec["entrypoint"],
        "tags": sorted(spec.get("tags", [])),
        "parameters": spec.get("parameters", {}),
        "parameter_schema": parameter_schema(flow).model_dump_for_openapi(),
        "work_pool": spec["work_pool"]["name"],
        "job_variables": spec["work_pool"].get("job_variables", {}) or {},
        "pull_steps": render_env(pull),
        "concurrency": concurrency,
        "schedules": [_schedule(s) for s in spec.get("schedules", [])],
        "triggers": [_trigger(t) for t in spec.get("triggers", [])],
    }


async def current_deployment(client: Any, flow: str, name: str) -> dict[str, Any] | None:
    """The same projection of what the server holds now, or None if it has no such deployment."""
    try:
        d = await client.read_deployment_by_name(f"{flow}/{name}")
    except ObjectNotFound:
        return None
    if d.global_concurrency_limit is not None:
        strategy = d.concurrency_options.collision_strategy.value if d.concurrency_options else None
        concurrency: Any = (d.global_concurrency_limit.limit, strategy)
    else:
        concurrency = d.concurrency_limit
    # The automations `prefect deploy` made from the deployment's triggers are owned by it.
    owned = await client.read_resource_related_automations(f"prefect.deployment.{d.id}")
    triggers = []
    for automation in sorted(owned, key=lambda a: a.name):
        if not automation.name.startswith(f"{name}__automation_"):
            continue
        trigger = automation.trigger.model_dump(mode="json")
        action = automation.actions[0].model_dump(mode="json") if automation.actions else {}
        triggers.append(
            {
                "match": trigger.get("match", {}),
                "match_related": trigger.get("match_related", {}) or {},
                "after": sorted(trigger.get("after", [])),
                "expect": sorted(trigger.get("expect", [])),
                "for_each": sorted(trigger.get("for_each", [])),
                "posture": trigger.get("posture"),
                "threshold": trigger.get("threshold"),
                "within": float(trigger.get("within", 0)),
                "parameters": action.get("parameters"),
                "enabled": automation.enabled,
            }
        )
    return {
        "flow": flow,
        "description": d.description,
        "entrypoint": d.entrypoint,
        "tags": sorted(d.tags),
        "parameters": d.parameters,
        "parameter_schema": d.parameter_openapi_schema,
        "work_pool": d.work_pool_name,
        "job_variables": d.job_variables or {},
        "pull_steps": d.pull_steps,
        "concurrency": concurrency,
        "schedules": [_schedule(s.schedule.model_dump(mode="json")) for s in d.schedules],
        "triggers": triggers,
    }


def _differences(want: dict[str, Any], have: dict[str, Any]) -> list[str]:
    return [
        k
        for k in want
        if json.dumps(want[k], sort_keys=True, default=str) != json.dumps(have.get(k), sort_keys=True, default=str)
    ]


async def changed_deployments(client: Any) -> list[str]:
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    changed = []
    for spec in config["deployments"]:
        want = desired_deployment(spec, config.get("pull", []))
        have = await current_deployment(client, want["flow"], spec["name"])
        if have is None:
            _log("creating", f"deployment {want['flow']}/{spec['name']}")
        elif differs := _differences(want, have):
            _log("updating", f"deployment {want['flow']}/{spec['name']} ({', '.join(differs)})")
        else:
            _log("unchanged", f"deployment {want['flow']}/{spec['name']}")
            continue
        changed.append(f"{want['flow']}/{spec['name']}")
    return changed


def export_trigger_settings() -> None:
    """The settings prefect.yaml's release triggers read, from the profile LOCKGATE_PROFILE names
    (default: embedded): LOCKGATE_CHANGE_WINDOW_S (data.change_window_s) and
    LOCKGATE_RELEASE_ON_QUERY_DRIFT (drift.release_on_query_drift)."""
    from lockgate.settings import load_settings

    settings = load_settings(os.environ.get("LOCKGATE_PROFILE", "embedded"))
    os.environ["LOCKGATE_CHANGE_WINDOW_S"] = str(settings.data.change_window_s)
    os.environ["LOCKGATE_RELEASE_ON_QUERY_DRIFT"] = str(settings.drift.release_on_query_drift).lower()


async def main() -> int:
    export_trigger_settings()
    async with get_client() as client:
        await apply_pools(client)
        await apply_quota(client)
        changed = await changed_deployments(client)
    if not changed:
        return 0
    prefect = os.environ.get("PREFECT", str(Path(sys.executable).parent / "prefect"))
    names = [arg for name in changed for arg in ("--name", name)]
    return subprocess.run([prefect, "--no-prompt", "deploy", *names], cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
