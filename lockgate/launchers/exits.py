"""Why a fine-tune's worker vanished, asked of the infrastructure that ran it.

A spot reclaim (or ``docker kill``) and an out-of-memory kill look the same to Prefect: the
run Crashed, exit code 137. They call for opposite answers: a preempted run is re-submitted
and resumes from its checkpoints; an out-of-memory run would hit the same wall again, so it
is not retried. Only the infrastructure knows which it was: Docker's ``State.OOMKilled``,
Kubernetes' terminated reason ``OOMKilled``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)

# Prefect's workers label what they start with the flow run's id; Docker's worker writes the
# label's namespace reversed ("prefect.io/flow-run-id" -> "io.prefect.flow-run-id").
FLOW_RUN_LABEL = "prefect.io/flow-run-id"
DOCKER_FLOW_RUN_LABEL = "io.prefect.flow-run-id"


@dataclass(frozen=True)
class WorkerExit:
    """How the worker of one flow run ended."""

    out_of_memory: bool
    detail: str


class ExitProbe(Protocol):
    """Reads how the infrastructure of a flow run ended."""

    def exit_of(self, flow_run_id: str) -> WorkerExit | None:
        """The exit of the run's container or pod; None when it cannot be found or asked."""
        ...


class DockerExitProbe:
    """Asks the Docker engine about the containers of a flow run, then removes them.

    The Docker pool keeps exited containers (``auto_remove: false``) so that this probe can
    read ``State.OOMKilled``; it removes each one it has read.
    """

    def __init__(self, client_factory: Callable[[], Any] | None = None, exit_wait_s: float = 60.0) -> None:
        self._client_factory = client_factory
        self.exit_wait_s = exit_wait_s

    def _client(self) -> Any:
        if self._client_factory is not None:
            return self._client_factory()
        import docker

        return docker.from_env()

    def exit_of(self, flow_run_id: str) -> WorkerExit | None:
        from docker.errors import DockerException

        try:
            client = self._client()
            containers = client.containers.list(all=True, filters={"label": f"{DOCKER_FLOW_RUN_LABEL}={flow_run_id}"})
            for container in containers:
                self._wait_for_exit(container)
            exits = [docker_exit(c.name, c.attrs.get("State", {})) for c in containers]
            for container in containers:
                if container.attrs.get("State", {}).get("Status") == "exited":
                    container.remove()
        except DockerException as exc:
            log.warning("cannot ask Docker how flow run %s ended: %s", flow_run_id, exc)
            return None
        return worst(exits)

    def _wait_for_exit(self, container: Any) -> None:
        """A crash is reported by the runner inside the container (its flow process was killed)
        a moment before the container exits; Docker records ``OOMKilled`` at the exit."""
        if container.attrs.get("State", {}).get("Status") in ("exited", "dead"):
            return
        try:
            container.wait(timeout=self.exit_wait_s)
        except Exception as exc:  # requests' timeout or connection error: read what there is
            log.info("container %s still running after %.0f s: %s", container.name, self.exit_wait_s, exc)
        container.reload()


def docker_exit(name: str, state: Mapping[str, Any]) -> WorkerExit:
    """The exit of one container from its ``State`` (``docker inspect``)."""
    code = state.get("ExitCode")
    if state.get("OOMKilled"):
        return WorkerExit(True, f"container {name} was killed for using too much memory (OOMKilled, exit {code})")
    return WorkerExit(False, f"container {name} exited with status {code} (not out of memory)")


def pod_exit(pod: Mapping[str, Any]) -> WorkerExit | None:
    """The exit of one Kubernetes pod from its JSON (``kubectl get pod -o json``)."""
    name = pod.get("metadata", {}).get("name", "?")
    statuses = pod.get("status", {}).get("containerStatuses") or []
    terminated = [s.get(when, {}).get("terminated") for s in statuses for when in ("state", "lastState") if s.get(when)]
    terminated = [t for t in terminated if t]
    if not terminated:
        reason = pod.get("status", {}).get("reason")  # e.g. "Evicted", "Preempting" for a reclaimed node
        return WorkerExit(False, f"pod {name}: {reason}") if reason else None
    for t in terminated:
        if t.get("reason") == "OOMKilled":
            return WorkerExit(
                True, f"pod {name} was killed for using too much memory (OOMKilled, exit {t.get('exitCode')})"
            )
    t = terminated[0]
    return WorkerExit(False, f"pod {name}: {t.get('reason', 'terminated')} (exit {t.get('exitCode')})")


class KubernetesExitProbe:
    """Asks the Kubernetes API (in-cluster or kubeconfig) about the pods of a flow run's job."""

    def __init__(self, namespace: str = "default") -> None:
        self.namespace = namespace

    def exit_of(self, flow_run_id: str) -> WorkerExit | None:
        import asyncio
        from concurrent.futures import ThreadPoolExecutor

        async def pods() -> list[dict[str, Any]]:
            from kubernetes_asyncio import client, config

            try:
                config.load_incluster_config()  # type: ignore[no-untyped-call]
            except config.ConfigException:
                await config.load_kube_config()
            async with client.ApiClient() as api:
                found = await client.CoreV1Api(api).list_namespaced_pod(
                    self.namespace, label_selector=f"{FLOW_RUN_LABEL}={flow_run_id}"
                )
                return [api.sanitize_for_serialization(p) for p in found.items]

        try:
            # Its own thread and event loop: the caller may already be inside one.
            with ThreadPoolExecutor(1) as pool:
                found = pool.submit(asyncio.run, pods()).result(timeout=60)
        except Exception as exc:  # any failure to ask means "unknown", never a verdict
            log.warning("cannot ask Kubernetes how flow run %s ended: %s", flow_run_id, exc)
            return None
        return worst(e for e in (pod_exit(p) for p in found) if e is not None)


def worst(exits: Iterable[WorkerExit]) -> WorkerExit | None:
    """Out of memory wins: one OOM-killed attempt is reason enough not to retry."""
    exits = list(exits)
    return next((e for e in exits if e.out_of_memory), exits[0] if exits else None)


def open_exit_probe(pool_type: str) -> ExitProbe | None:
    """The probe for a work pool's type; None where the infrastructure cannot tell (process pools)."""
    if pool_type == "docker":
        return DockerExitProbe()
    if pool_type == "kubernetes":
        return KubernetesExitProbe()
    return None
