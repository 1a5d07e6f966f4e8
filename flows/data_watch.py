"""Watch the data and announce changes as events; deployment triggers start the pipeline."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.events import emit_event

from flows.params import StageParams
from lockgate import events
from lockgate.digest import short
from lockgate.watch import look_for_change, record_change


@flow(name="data-watch")
def data_watch(params: StageParams = StageParams()) -> bool:  # noqa: B008 (the UI form's default)
    """Fingerprint the training sources and the corpus; if they changed since the last look, emit
    ``lockgate.dataset.changed`` (resource ``lockgate.dataset.<name>``, new digest in the payload).

    Returns whether anything changed.
    """
    logger = get_run_logger()
    settings = params.settings()
    state_file = settings.home_path / "watch" / f"{settings.data.name}.json"
    sources = settings.sources
    change = look_for_change(sources, settings.resolve(settings.data.corpus_dir), state_file)
    if change.changed:
        sent = emit_event(
            event=events.DATASET_CHANGED,
            resource=events.dataset_resource(settings.data.name),
            payload={"digest": change.digest, "previous": change.previous, "files": len(change.files)},
        )
        # Recorded only once the event is out: if emitting failed, the next tick announces it again.
        if sent is None:
            logger.warning("data changed but the event could not be emitted; the next look announces it again")
            return True
        record_change(change, state_file)
        previous = short(change.previous) if change.previous else "none"
        logger.info("data changed: %s -> %s", previous, short(change.digest))
    else:
        logger.info("no change (%s)", short(change.digest))
    return change.changed
