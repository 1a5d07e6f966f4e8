"""Corpus drift on a real Prefect server, with the real embedder and a real Milvus Lite index: a
refresh keeps a sample of the corpus it indexed; the corpus about to be indexed is judged against
the serving collection's sample. The same topic (half the documents gone) is no drift; a third of
the documents replaced by another topic is, and emits ``lockgate.drift.detected`` for
``lockgate.corpus.<collection>`` once per cooldown (prefect.yaml starts the refresh on it)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from benchmarks.bench_drift import DISHES
from flows.cli import main
from flows.params import CorpusDriftParams
from lockgate import events
from tests.conftest import EXAMPLES
from tests.live import events as server_events

pytestmark = pytest.mark.slow

COLLECTION = "quillstone_chunks"  # the embedded profile's vector_store.collection


def cooking_doc(dish: str) -> str:
    """A corpus document on another topic, shaped like the sample's (a title, four sections)."""
    return (
        f"# Cooking {dish}\n\nA home cook's notes on {dish}, from the market to the table.\n\n"
        f"## Preparing\n\nRinse the {dish} and let them come to room temperature. Season {dish} with salt "
        "and pepper before they meet the pan.\n\n"
        f"## Cooking\n\nCook {dish} over a medium heat and taste as you go. An oven at 200 degrees suits "
        f"{dish} that need colour.\n\n"
        f"## Serving\n\nServe {dish} warm with a green salad or bread. Leftover {dish} keep three days in the fridge.\n"
    )


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A state folder whose serving index was refreshed from a copy of the sample corpus."""
    from flows.refresh import RefreshParams, refresh

    root = tmp_path_factory.mktemp("corpus-drift")
    corpus = root / "corpus"
    shutil.copytree(EXAMPLES / "corpus", corpus)
    home = root / "home"
    build = refresh(RefreshParams(home=str(home), corpus_dir=str(corpus)))
    assert build.total > 100, build
    return home, corpus


def test_the_same_topic_is_no_drift_and_a_third_on_another_topic_alarms_once(
    prefect_harness: None, indexed: tuple[Path, Path], tmp_path: Path
) -> None:
    from prefect.settings import get_current_settings

    from flows.drift import corpus_drift

    home, corpus = indexed
    # Half the documents gone, the rest as indexed: the same topic.
    same = tmp_path / "same"
    same.mkdir()
    for doc in sorted(corpus.glob("*.md"))[::2]:
        shutil.copy(doc, same / doc.name)
    kept = corpus_drift(CorpusDriftParams(home=str(home), corpus_dir=str(same)))
    assert kept.report is not None and not kept.report.drifted and kept.alarm == "none", kept
    assert kept.report.p_value is not None and kept.report.p_value > 0.01
    assert kept.collection.startswith(f"{COLLECTION}__") and kept.reference_chunks > 100

    # A third of the documents replaced by cooking notes.
    mixed = tmp_path / "mixed"
    shutil.copytree(corpus, mixed)
    replaced = sorted(mixed.glob("*.md"))[::3]
    for doc, dish in zip(replaced, DISHES, strict=False):
        doc.write_text(cooking_doc(dish))
    assert len(replaced) >= 10
    found = corpus_drift(CorpusDriftParams(home=str(home), corpus_dir=str(mixed)))
    assert found.report is not None and found.report.drifted and found.alarm == "sent", found
    assert found.report.p_value is not None and found.report.p_value <= 0.01
    assert found.report.html_path and Path(found.report.html_path).is_file(), "a drift writes Evidently's report"

    again = corpus_drift(CorpusDriftParams(home=str(home), corpus_dir=str(mixed)))
    assert again.report is not None and again.report.drifted and again.alarm == "cooldown"

    sent = [
        e
        for e in server_events(get_current_settings().api.url, events.DRIFT_DETECTED)
        if e["resource"]["prefect.resource.id"] == f"lockgate.corpus.{COLLECTION}"
    ]
    assert len(sent) == 1, "a drift that persists sends one event per cooldown"
    assert sent[0]["payload"]["kind"] == "corpus" and sent[0]["payload"]["collection"] == found.collection
    assert sent[0]["payload"]["p_value"] <= 0.01


def test_the_command_prints_the_verdict_and_refuses_a_home_without_an_index(
    prefect_harness: None, indexed: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home, corpus = indexed
    assert main(["--home", str(home), "drift", "corpus", "--corpus", str(corpus)]) == 0
    out = capsys.readouterr().out
    assert f"{COLLECTION}__" in out and ": no drift: mmd score" in out, out
    assert "chunks against the" in out and "the serving index was built from" in out, out

    empty = tmp_path / "empty-home"
    assert main(["--home", str(empty), "drift", "corpus", "--corpus", str(corpus)]) == 2
    err = capsys.readouterr().err
    assert f"index {COLLECTION}: nothing serves yet" in err and "flows refresh" in err, err
    assert "Traceback" not in err
