"""Corpus drift on a real Prefect server, with the real embedder and a real Milvus Lite index: a
refresh keeps a sample of the corpus it indexed; the corpus about to be indexed is judged against
the serving collection's sample. The same topic (half the documents gone) is no drift; a third of
the documents replaced by another topic is, and emits ``lockgate.drift.detected`` for
``lockgate.corpus.<collection>`` once per cooldown, which starts the refresh deployment on a live
server with the automations applied."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from benchmarks.bench_drift import DISHES
from flows.cli import main
from flows.params import CorpusDriftParams
from lockgate import events
from tests.conftest import EXAMPLES
from tests.live import apply_environment
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


def test_the_same_topic_is_no_drift_and_a_third_on_another_topic_starts_one_refresh(
    prefect_harness: None, indexed: tuple[Path, Path], server: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    """The drift itself is found by `lockgate drift corpus` against a live Prefect server with the
    deployments and automations applied (deployments/apply.sh): its event starts one run of the
    refresh deployment; the same drift checked again within the cooldown starts nothing."""
    import re
    import subprocess
    import time

    from flows.drift import corpus_drift
    from tests.conftest import ROOT
    from tests.live import api

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

    url, env = server
    env = {**env, "LOCKGATE_HOME": str(home)}
    apply_environment(env)
    refresh = next(d for d in api(url, "/deployments/filter", {}) if d["name"] == "refresh-nightly")

    def refreshes() -> list[dict[str, object]]:
        runs = api(url, "/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": [refresh["id"]]}}})
        return [r for r in runs if not r["auto_scheduled"]]

    def check(folder: Path) -> str:
        done = subprocess.run(
            [str(ROOT / ".venv" / "bin" / "python"), "-m", "flows", "drift", "corpus", "--corpus", str(folder)],
            env=env, capture_output=True, text=True, timeout=300, cwd=ROOT,
        )  # fmt: skip
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stdout[-2000:] + done.stderr[-3000:]
        return done.stdout

    # A third of the documents replaced by cooking notes.
    mixed = tmp_path / "mixed"
    shutil.copytree(corpus, mixed)
    replaced = sorted(mixed.glob("*.md"))[::3]
    for doc, dish in zip(replaced, DISHES, strict=False):
        doc.write_text(cooking_doc(dish))
    assert len(replaced) >= 10
    found = check(mixed)
    verdict = re.search(r": DRIFT: mmd score \S+ vs calibrated threshold \S+, p = (\S+)", found)
    assert verdict and float(verdict.group(1)) <= 0.01, found
    assert "alarm: lockgate.drift.detected sent" in found, found
    report = re.search(r"report: (\S+)", found)
    assert report and Path(report.group(1)).is_file(), "a drift writes Evidently's report"
    deadline = time.monotonic() + 60
    while not refreshes() and time.monotonic() < deadline:
        time.sleep(1)
    assert len(refreshes()) == 1, "the corpus drift started the refresh"

    again = check(mixed)
    assert ": DRIFT:" in again and "held back (cooldown)" in again, again
    time.sleep(5)  # what an event would have started by now
    assert len(refreshes()) == 1, "a drift that persists starts one refresh per cooldown"
    sent = [
        e
        for e in server_events(url, events.DRIFT_DETECTED)
        if e["resource"]["prefect.resource.id"] == f"lockgate.corpus.{COLLECTION}"
    ]
    assert len(sent) == 1 and sent[0]["payload"]["kind"] == "corpus", sent
    assert sent[0]["payload"]["collection"] == kept.collection and sent[0]["payload"]["p_value"] <= 0.01


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
