"""Watch the data and the prompt files, and announce changes as events; deployment triggers start
the release pipeline (new data) or the prompt-only release (a new prompt version)."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from flows.params import StageParams
from lockgate import events
from lockgate.digest import short
from lockgate.watch import look_for_change, look_for_prompt_changes, record_change, record_prompt_change
from tasks.common import announce


@flow(name="data-watch")
def data_watch(params: StageParams = StageParams()) -> bool:  # noqa: B008 (the UI form's default)
    """Fingerprint the training sources and the corpus; if they changed since the last look, emit
    ``lockgate.dataset.changed`` (resource ``lockgate.dataset.<name>``, new digest in the payload).
    Fingerprint every prompt file too; for each new prompt version emit ``lockgate.prompt.changed``
    (resource ``lockgate.prompt.<name>``, the version's digest in the payload).

    Returns whether the data changed.
    """
    logger = get_run_logger()
    settings = params.settings()
    state_file = settings.home_path / "watch" / f"{settings.data.name}.json"
    sources = settings.sources
    change = look_for_change(sources, settings.resolve(settings.data.corpus_dir), state_file)
    if change.changed:
        sent = announce(
            events.DATASET_CHANGED,
            events.dataset_resource(settings.data.name),
            {"digest": change.digest, "previous": change.previous, "files": len(change.files)},
        )
        # Recorded only once the server has the event: if it has not, the next look announces it again.
        if not sent:
            logger.warning("data changed but the event did not reach the server; the next look announces it again")
        else:
            record_change(change, state_file)
            previous = short(change.previous) if change.previous else "none"
            logger.info("data changed: %s -> %s", previous, short(change.digest))
    else:
        logger.info("no change (%s)", short(change.digest))
    announce_prompt_changes(settings.prompts_path, settings.home_path / "watch" / "prompts.json")
    return change.changed


def announce_prompt_changes(folder: Path, state_file: Path) -> int:
    """Emit ``lockgate.prompt.changed`` for every new prompt version; returns how many went out."""
    logger = get_run_logger()
    changes, problems = look_for_prompt_changes(folder, state_file)
    for name, problem in sorted(problems.items()):
        logger.error("prompt %s not announced: %s", name, problem)
    sent_count = 0
    for change in changes:
        sent = announce(
            events.PROMPT_CHANGED,
            events.prompt_resource(change.name),
            {"name": change.name, "digest": change.digest, "version": change.version, "previous": change.previous},
        )
        if not sent:
            logger.warning(
                "prompt %s changed but the event did not reach the server; announced again next time", change.name
            )
            continue
        record_prompt_change(change, state_file)
        sent_count += 1
        logger.info(
            "prompt changed: %s (was %s)", change.version, short(change.previous) if change.previous else "none"
        )
    return sent_count
