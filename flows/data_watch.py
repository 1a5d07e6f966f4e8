"""Watch the data and announce changes as events; deployment triggers start the pipeline."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.events import emit_event

from flows.params import StageParams
from lockgate import events
from lockgate.watch import check_for_change


@flow(name="data-watch")
def data_watch(params: StageParams = StageParams()) -> bool:  # noqa: B008 (the UI form's default)
    """Fingerprint the training sources and the corpus; if they changed since the last look, emit
    ``lockgate.dataset.changed`` (resource ``lockgate.dataset.<name>``, new digest in the payload).

    Returns whether anything changed.
    """
    logger = get_run_logger()
    settings = params.settings()
    change = check_for_change(
        [settings.resolve(s) for s in settings.data.sources],
        settings.resolve(settings.data.corpus_dir),
        settings.home_path / "watch" / f"{settings.data.name}.json",
    )
    if change.changed:
        emit_event(
            event=events.DATASET_CHANGED,
            resource=events.dataset_resource(settings.data.name),
            payload={"digest": change.digest, "previous": change.previous, "files": len(change.files)},
        )
        logger.info("data changed: %s -> %s", (change.previous or "none")[:19], change.digest[:19])
    else:
        logger.info("no change (%s)", change.digest[:19])
    return change.changed
