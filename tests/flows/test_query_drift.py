"""Query drift on a real Prefect server: the questions users asked (the gateway's query log) against
production's training questions, with the real embedder and a calibrated threshold; a drift emits
``lockgate.drift.detected`` once per cooldown, a window too small is not judged."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks.bench_drift import cooking_questions, product_questions
from flows.cli import main
from flows.params import QueryDriftParams
from lockgate import events
from lockgate.drift import AlarmBook
from lockgate.settings import load_settings
from lockgate.workspace import Workspace
from tests.live import events as server_events

pytestmark = pytest.mark.slow


def production_trained_on(home: Path, questions: list[str]) -> None:
    """A production model (a signed artifact) whose lineage names its training questions."""
    workspace = Workspace.open(load_settings(overrides={"home": str(home)}))
    train = home / "train.jsonl"
    train.write_text("".join(json.dumps({"instruction": q, "output": "-"}) + "\n" for q in questions))
    staged = workspace.artifacts.staging("quantized")
    (staged / "model.safetensors").write_bytes(b"\x01" * 64)
    digest, path = workspace.artifacts.commit("quantized", staged)
    workspace.registry.record_release(digest, str(path), {"dataset_train": str(train)}, {}, True, None)


def served(home: Path, windows: dict[str, list[str]]) -> None:
    """The gateway's query log, as it writes it: one row per answered question."""
    log = home / "serving" / "queries.jsonl"
    log.parent.mkdir(parents=True, exist_ok=True)
    now = time.time()
    with log.open("a") as out:
        for variant, questions in windows.items():
            for k, q in enumerate(questions):
                row = {"at": now - 60 + k * 0.1, "question": q, "variant": variant, "model": f"sha256:{variant}"}
                out.write(json.dumps(row) + "\n")


def test_off_topic_questions_alarm_once_per_cooldown_and_on_topic_ones_do_not(
    prefect_harness: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from prefect.settings import get_current_settings

    from flows.drift import query_drift

    everything = product_questions()  # in file order, one document after another: shuffled, then split
    product = [everything[i] for i in np.random.default_rng(0).permutation(len(everything))]
    production_trained_on(tmp_path, product[:300])
    served(
        tmp_path,
        {
            "production": cooking_questions()[:60],  # users ask about something else entirely
            "canary": product[300:360],  # questions like the training ones, never seen in training
            "shadow": product[360:365],  # too few to judge
        },
    )
    params = QueryDriftParams(home=str(tmp_path), window=60)
    first = {r.variant: r for r in query_drift(params)}
    assert sorted(first) == ["canary", "production", "shadow"]

    production = first["production"].report
    assert production is not None and production.drifted and first["production"].alarm == "sent"
    assert production.p_value is not None and production.p_value <= 0.01 and production.n_current == 60
    assert production.html_path and Path(production.html_path).is_file(), "a drift writes Evidently's report"
    canary = first["canary"].report
    assert canary is not None and not canary.drifted and first["canary"].alarm == "none"
    assert canary.p_value is not None and canary.p_value > 0.01 and canary.html_path is None, "fast path: no HTML"
    assert first["shadow"].report is None and "5 current and 300 reference rows are too few" in str(
        first["shadow"].not_judged
    )

    again = {r.variant: r for r in query_drift(params)}
    held = again["production"].report
    assert held is not None and held.drifted and again["production"].alarm == "cooldown"
    assert held.html_path is None, "the report of a drift that persists was written when the alarm rang"

    url = get_current_settings().api.url
    sent = [
        e
        for e in server_events(url, events.DRIFT_DETECTED)
        if e["resource"]["prefect.resource.id"] == "lockgate.queries.quillstone-qa.production"
    ]
    assert len(sent) == 1, "a drift that persists sends one event per cooldown"
    assert sent[0]["payload"]["variant"] == "production" and sent[0]["payload"]["p_value"] <= 0.01
    assert AlarmBook(tmp_path / "state" / "drift-alarms.json").last("lockgate.queries.quillstone-qa.production")

    # The command prints the threshold the same reference sets for that window, and records it.
    assert main(["--home", str(tmp_path), "drift", "calibrate", "--window", "60"]) == 0
    out = capsys.readouterr().out
    assert "mmd for windows of 60 questions against production's 300 training questions" in out, out
    printed = re.search(r"threshold (\S+) at false-alarm rate 0.01 \(200 resamples", out)
    assert printed and float(printed.group(1)) == pytest.approx(production.threshold, rel=1e-3), out
    assert list((tmp_path / "artifacts" / "drift-calibrations").glob("*/calibration.json"))
