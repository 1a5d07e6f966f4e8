"""Names of the events Lockgate emits and the resources they are about.

Deployment triggers in ``prefect.yaml`` match on these; a test keeps the two in step.
"""

from __future__ import annotations

from lockgate.digest import short

ARTIFACT_TAMPERED = "lockgate.artifact.tampered"
DATASET_CHANGED = "lockgate.dataset.changed"
DRIFT_DETECTED = "lockgate.drift.detected"
GATE_PASSED = "lockgate.gate.passed"
GATE_REJECTED = "lockgate.gate.rejected"
GATE_UNCHANGED = "lockgate.gate.unchanged"
MODEL_PROMOTED = "lockgate.model.promoted"
MODEL_ROLLED_BACK = "lockgate.model.rolled_back"
PROMPT_CHANGED = "lockgate.prompt.changed"
PROMPT_PROMOTED = "lockgate.prompt.promoted"


def artifact_resource(artifact: str) -> dict[str, str]:
    """The event resource of a stored artifact (``<kind>/<address>``): ``lockgate.artifact.<kind>.<address>``."""
    return {"prefect.resource.id": f"lockgate.artifact.{artifact.replace('/', '.')}", "prefect.resource.name": artifact}


def dataset_resource(name: str) -> dict[str, str]:
    """The event resource of a dataset: ``lockgate.dataset.<name>``."""
    return {"prefect.resource.id": f"lockgate.dataset.{name}", "prefect.resource.name": name}


def model_resource(digest: str) -> dict[str, str]:
    """The event resource of a model version, by the start of its digest."""
    return {"prefect.resource.id": f"lockgate.model.{short(digest)}"}


def queries_resource(deployment: str, variant: str) -> dict[str, str]:
    """The event resource of one variant's served questions: ``lockgate.queries.<deployment>.<variant>``."""
    return {
        "prefect.resource.id": f"lockgate.queries.{deployment}.{variant}",
        "prefect.resource.name": f"{deployment} {variant}",
        "lockgate.variant": variant,
    }


def corpus_resource(collection: str) -> dict[str, str]:
    """The event resource of the corpus an index collection is built from: ``lockgate.corpus.<collection>``
    (the logical collection, ``vector_store.collection``)."""
    return {"prefect.resource.id": f"lockgate.corpus.{collection}", "prefect.resource.name": collection}


def prompt_resource(name: str) -> dict[str, str]:
    """The event resource of a prompt: ``lockgate.prompt.<name>``."""
    return {"prefect.resource.id": f"lockgate.prompt.{name}", "prefect.resource.name": name}
