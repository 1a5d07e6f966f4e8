"""Checks on the project as a whole: layering, lint, types, and that config files stay true."""

from __future__ import annotations

import ast
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lockgate import events
from lockgate._io import user_cache_dir
from tests.conftest import ROOT


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_library_never_imports_prefect_or_upper_layers() -> None:
    for path in (ROOT / "lockgate").rglob("*.py"):
        bad = {m for m in imported_modules(path) if m.split(".")[0] in ("prefect", "tasks", "flows")}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_tasks_never_import_flows() -> None:
    for path in (ROOT / "tasks").rglob("*.py"):
        assert not {m for m in imported_modules(path) if m.split(".")[0] == "flows"}, path


LAYERS = ("lockgate", "tasks", "flows")


def module_imports(root: Path) -> dict[str, list[tuple[str, str]]]:
    """Each module of ``LAYERS`` under ``root`` -> the (module, name) pairs it imports from the others.

    Imports inside functions count: a lazy import still ties two modules together. ``name`` is ""
    for a plain ``import module``.
    """
    files = {}
    for layer in LAYERS:
        for path in (root / layer).rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    out: dict[str, list[tuple[str, str]]] = {}
    for module, path in files.items():
        pairs: list[tuple[str, str]] = []
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    submodule = f"{node.module}.{alias.name}"
                    pairs.append((submodule, "") if submodule in files else (node.module, alias.name))
            elif isinstance(node, ast.Import):
                pairs += [(alias.name, "") for alias in node.names]
        out[module] = [(target, name) for target, name in pairs if target in files and target != module]
    return out


def import_cycles(imports: dict[str, list[tuple[str, str]]]) -> list[list[str]]:
    """Groups of modules that import each other round a loop (Tarjan's strongly connected components).

    A package with its own submodules (a Protocol in ``__init__``, adapters importing it, a factory
    importing them lazily) is the ports pattern, not a cycle between rooms.
    """
    edges = {m: {t for t, _ in targets} for m, targets in imports.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group: list[str] = []
            while not group or group[-1] != v:
                group.append(stack.pop())
            package = min(group, key=len)
            if len(group) > 1 and not all(m == package or m.startswith(package + ".") for m in group):
                cycles.append(sorted(group))

    for module in sorted(edges):
        if module not in index:
            visit(module)
    return cycles


def private_imports(imports: dict[str, list[tuple[str, str]]]) -> list[str]:
    """``module imports other._name``: a private name used outside its module (a private module's names are its own)."""
    return [
        f"{module} imports {target}.{name}"
        for module, targets in imports.items()
        for target, name in targets
        if name.startswith("_") and not name.startswith("__") and not target.rsplit(".", 1)[-1].startswith("_")
    ]


def test_no_import_cycle_and_no_private_name_imported_across_modules() -> None:
    imports = module_imports(ROOT)
    assert not import_cycles(imports), import_cycles(imports)
    assert not private_imports(imports), private_imports(imports)


def test_the_import_checks_catch_a_planted_cycle_and_a_planted_private_import(tmp_path: Path) -> None:
    """The two checks above would fail on the mistakes they exist for (planted in a copy, not in the tree)."""
    for layer in LAYERS:
        (tmp_path / layer).mkdir()
    (tmp_path / "lockgate" / "__init__.py").write_text("")
    (tmp_path / "lockgate" / "ports" / "adapter.py").parent.mkdir()
    (tmp_path / "lockgate" / "ports" / "__init__.py").write_text(
        "def open_port():\n    from lockgate.ports import adapter\n"
    )
    (tmp_path / "lockgate" / "ports" / "adapter.py").write_text("from lockgate.ports import open_port\n")
    (tmp_path / "flows" / "a.py").write_text("from flows.b import helper\n")
    (tmp_path / "flows" / "b.py").write_text("def helper():\n    from flows import a\n")
    (tmp_path / "tasks" / "t.py").write_text(
        "from lockgate.ports.adapter import _secret\nfrom lockgate._io import _fine\n"
    )
    (tmp_path / "lockgate" / "_io.py").write_text("")
    imports = module_imports(tmp_path)
    assert import_cycles(imports) == [["flows.a", "flows.b"]], "the ports package is no cycle; a <-> b is"
    assert private_imports(imports) == ["tasks.t imports lockgate.ports.adapter._secret"]


def test_ruff_lint_and_format() -> None:
    targets = ["lockgate", "tasks", "flows", "tests", "benchmarks", "examples"]
    lint = subprocess.run([sys.executable, "-m", "ruff", "check", *targets], cwd=ROOT, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout
    fmt = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", *targets], cwd=ROOT, capture_output=True, text=True
    )
    assert fmt.returncode == 0, fmt.stdout


def test_mypy_strict_on_the_library() -> None:
    # One incremental cache per machine, not per clone: CI's fresh clone re-checks only what changed
    # (mypy validates cached modules by content), about 3 s instead of 45.
    cache = user_cache_dir("mypy")
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(cache), "lockgate"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout[-4000:]


def prefect_yaml() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((ROOT / "prefect.yaml").read_text())


@pytest.mark.parametrize("deployment", prefect_yaml()["deployments"], ids=lambda d: d["name"])
def test_deployment_entrypoints_and_parameters_are_valid(deployment: dict) -> None:  # type: ignore[type-arg]
    from prefect import Flow

    module_path, func = deployment["entrypoint"].split(":")
    module = importlib.import_module(module_path.removesuffix(".py").replace("/", "."))
    flow = getattr(module, func)
    assert isinstance(flow, Flow)
    assert flow.fn.__doc__, "a flow's docstring is its description in the UI"
    flow.validate_parameters(deployment.get("parameters", {}))
    for trigger in deployment.get("triggers", []):
        for event in trigger["expect"]:
            assert event in vars(events).values(), f"trigger waits for {event}, which Lockgate never emits"
        rendered = json.loads(json.dumps(trigger["parameters"]).replace("{{ event.payload.digest }}", "sha256:x"))
        flow.validate_parameters(rendered)


def test_work_pools_used_are_created_by_apply_script() -> None:
    created = set(yaml.safe_load((ROOT / "deployments" / "pools.yaml").read_text()))
    used = {d["work_pool"]["name"] for d in prefect_yaml()["deployments"]}
    assert used <= created


def test_gpu_deployment_job_renders_gpus_spot_placement_and_checkpoint_volume() -> None:
    """The finetune-gpu deployment's job, rendered offline by prefect-kubernetes' own worker code."""
    import asyncio
    import uuid

    from prefect.client.schemas.objects import FlowRun
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    template = json.loads((ROOT / "deployments" / "gpu-job-template.json").read_text())
    deployment = next(d for d in prefect_yaml()["deployments"] if d["name"] == "finetune-gpu")
    assert deployment["work_pool"]["name"] == "lockgate-gpu"
    variables = {**deployment["work_pool"]["job_variables"], "image": "lockgate-trainer:test"}
    rendered = KubernetesWorkerJobConfiguration.from_template_and_values(template, variables)
    config = asyncio.run(rendered) if asyncio.iscoroutine(rendered) else rendered
    config.prepare_for_flow_run(FlowRun(flow_id=uuid.uuid4(), name="finetune-test"))
    pod = config.job_manifest["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == {"cloud.google.com/gke-spot": "true"}
    assert pod["tolerations"][0]["key"] == "cloud.google.com/gke-spot"
    assert pod["volumes"] == [{"name": "checkpoints", "persistentVolumeClaim": {"claimName": "lockgate-checkpoints"}}]
    assert container["volumeMounts"] == [{"name": "checkpoints", "mountPath": "/checkpoints"}]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["LOCKGATE_TRAINING__CHECKPOINT_URL"] == "/checkpoints", "checkpoints go to the mounted volume"
    assert env["LOCKGATE_TRAINING__DEVICE"] == "cuda" and container["image"] == "lockgate-trainer:test"


def test_dockerfiles_copy_only_what_exists() -> None:
    """Every COPY source is in the checkout, or is made for the build context by scripts/images.sh."""
    images = (ROOT / "scripts" / "images.sh").read_text()
    for dockerfile in (ROOT / "infra" / "docker").glob("*.Dockerfile"):
        for line in dockerfile.read_text().splitlines():
            if line.startswith("COPY "):
                for src in line.split()[1:-1]:
                    made = f'"$ctx/{src}' in images or f"$ctx/{src}" in images
                    assert (ROOT / src).exists() or made, f"{dockerfile.name}: COPY {src} does not exist"


def test_compose_file_parses_and_has_no_default_password() -> None:
    compose = yaml.safe_load((ROOT / "infra" / "compose.yaml").read_text())
    assert {"postgres", "prefect-server", "worker"} <= set(compose["services"])
    assert ":?" in compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"]


def test_readme_commands_match_ci_and_makefile() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and re.search(r"^make test$", ci, re.M)
    targets = set(re.findall(r"^([a-z-]+):", (ROOT / "Makefile").read_text(), re.M))
    for target in set(re.findall(r"`make ([a-z-]+)", readme)):
        assert target in targets, f"README mentions make {target}, which the Makefile lacks"
