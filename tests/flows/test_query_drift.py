"""Watching production on a real Prefect server. Query drift: the questions users asked (the
gateway's query log) against production's training questions, with the real embedder and a
calibrated threshold; a drift emits ``lockgate.drift.detected`` once per cooldown, a window too
small is not judged. Online evaluation: the same windows' best chunks in a real Milvus Lite index
and their users' ratings, per variant; a canary rated worse is rolled back."""

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
from lockgate._io import load_jsonl
from lockgate.drift import AlarmBook
from tests.conftest import EXAMPLES
from tests.factories import production_trained_on
from tests.live import events as server_events

pytestmark = pytest.mark.slow


def served(home: Path, windows: dict[str, list[str]]) -> None:
    """The gateway's query log, as it writes it: one row per answered question."""
    log = home / "serving" / "queries.jsonl"
    log.parent.mkdir(parents=True, exist_ok=True)
    now = time.time()
    with log.open("a") as out:
        for variant, questions in windows.items():
            for k, q in enumerate(questions):
                at = now - 60 + k * 0.1
                row = {
                    "at": at,
                    "id": f"{variant}-{k}",
                    "question": q,
                    "variant": variant,
                    "model": f"sha256:{variant}",
                    "answer": f"The answer {k}." if k % 3 else "",  # every third failed: nothing to judge
                }
                out.write(json.dumps(row) + "\n")


@pytest.fixture(scope="module")
def product() -> list[str]:
    everything = product_questions()  # in file order, one document after another: shuffled, then split
    return [everything[i] for i in np.random.default_rng(0).permutation(len(everything))]


@pytest.fixture(scope="module")
def home(product: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Production trained on 300 product questions; then users asked cooking questions of
    production, product questions of the canary, and five questions of a third variant."""
    home = tmp_path_factory.mktemp("watched")
    production_trained_on(home, product[:300])
    served(
        home,
        {
            "production": cooking_questions()[:60],  # users ask about something else entirely
            "canary": product[300:360],  # questions like the training ones, never seen in training
            "shadow": product[360:365],  # too few to judge
        },
    )
    return home


def test_off_topic_questions_alarm_once_per_cooldown_and_on_topic_ones_do_not(
    prefect_harness: None, home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.settings import get_current_settings

    from flows.drift import query_drift

    params = QueryDriftParams(home=str(home), window=60)
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

    # On schedule (drift.report_every_s): a check without a drift writes the report when the last is older.
    monkeypatch.setenv("LOCKGATE_DRIFT__REPORT_EVERY_S", "3600")
    scheduled = {r.variant: r.report for r in query_drift(params)}
    assert scheduled["canary"] is not None and not scheduled["canary"].drifted
    assert scheduled["canary"].html_path and Path(scheduled["canary"].html_path).is_file(), "the scheduled report"
    later = {r.variant: r.report for r in query_drift(params)}
    assert later["canary"] is not None and later["canary"].html_path is None, "one report per period"

    url = get_current_settings().api.url
    sent = [
        e
        for e in server_events(url, events.DRIFT_DETECTED)
        if e["resource"]["prefect.resource.id"] == "lockgate.queries.quillstone-qa.production"
    ]
    assert len(sent) == 1, "a drift that persists sends one event per cooldown"
    assert sent[0]["payload"]["variant"] == "production" and sent[0]["payload"]["p_value"] <= 0.01
    assert AlarmBook(home / "state" / "drift-alarms.json").last("lockgate.queries.quillstone-qa.production")

    # The command prints the threshold the same reference sets for that window, and records it.
    assert main(["--home", str(home), "drift", "calibrate", "--window", "60"]) == 0
    out = capsys.readouterr().out
    assert "mmd for windows of 60 questions against production's 300 training questions" in out, out
    printed = re.search(r"threshold (\S+) at false-alarm rate 0.01 \(200 resamples", out)
    assert printed and float(printed.group(1)) == pytest.approx(production.threshold, rel=1e-3), out
    assert list((home / "artifacts" / "drift-calibrations").glob("*/calibration.json"))


def test_online_evaluation_finds_questions_without_context_and_a_canary_rated_worse(
    prefect_harness: None, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Also: with a judge configured (a scripted one on 127.0.0.1, tests/lockgate/judge_server.py), a
    sample of each indexed variant's logged answers is judged for faithfulness; a judge that answers
    garbage leaves them unscored, counted, and the evaluation still ends."""
    from prefect.settings import get_current_settings

    from flows.online_eval import online_eval
    from lockgate.embeddings import SentenceTransformerEmbedder
    from lockgate.prompts import GROUNDED_QA
    from lockgate.serving import CANARY_ROLLED_BACK, ServingManifest, Variant, load_manifest, write_manifest
    from lockgate.stores import StoredChunk, open_store
    from tests.lockgate.judge_server import judge_server

    contexts = sorted({row["context"] for row in load_jsonl(EXAMPLES / "data" / "qa.jsonl")})
    uri, collection = str(home / "index.db"), "docs"
    store = open_store("milvus-lite", uri, collection)
    vectors = SentenceTransformerEmbedder().encode(contexts)
    store.ensure_collection(vectors.shape[1])
    store.upsert([StoredChunk(f"c{i}", f"d{i}", "doc.md", "t", text) for i, text in enumerate(contexts)], vectors)
    variants = tuple(
        Variant(
            name=name,  # type: ignore[arg-type]
            model_digest=f"sha256:{name}",
            served_model="m",
            engine_url="http://127.0.0.1:9",
            model_path="m",
            prompt_version=GROUNDED_QA.version,
            index_uri=uri,
            index_collection=collection,
            weight=0.5,
        )
        for name in ("production", "canary")
    )
    write_manifest(home / "serving" / "manifest.json", ServingManifest(variants=variants, max_model_len=512))
    ratings = [("production", k, -1 if k < 3 else 1) for k in range(30)]
    ratings += [("canary", k, -1 if k < 20 else 1) for k in range(30)]
    (home / "serving" / "feedback.jsonl").write_text(
        "".join(json.dumps({"at": 0, "id": f"{v}-{k}", "rating": r, "client": "t"}) + "\n" for v, k, r in ratings)
    )

    with judge_server("ok") as judge:
        monkeypatch.setenv("LOCKGATE_EVALUATION__JUDGE_BASE_URL", judge.base_url)
        qualities = {q.variant: q for q in online_eval(QueryDriftParams(home=str(home), window=60))}
        judged_calls = judge.requests
    production, canary, shadow = qualities["production"], qualities["canary"], qualities["shadow"]
    for q in (production, canary):  # 40 answered of 60; monitoring.judge_sample (20) of them judged
        assert q.faithfulness is not None and q.faithfulness.n == 20 and q.judge_missing == 0, q
        assert q.faithfulness.mean == 1.0, q.faithfulness  # the scripted judge finds every statement supported
    assert 40 <= judged_calls <= 200, judged_calls
    assert shadow.faithfulness is None, "no index: no context to judge its answers against"
    assert production.no_context_share > 0.8 and canary.no_context_share < 0.2, (production, canary)
    assert canary.top_similarity.ci_low > production.top_similarity.ci_high
    assert (production.rated, production.thumbs_down, canary.rated, canary.thumbs_down) == (30, 3, 30, 20)
    assert production.worse_than_production is None
    assert (canary.worse_than_production or "").startswith("canary's answers were rated down 67% of 30 times")
    assert shadow.top_similarity.n == 0 and shadow.rated == 0, "a variant nobody serves has nothing to retrieve from"

    # The canary rated worse is rolled back: all traffic on production, the event names why.
    after = load_manifest(home / "serving" / "manifest.json")
    assert after.canary is None and [v.name for v in after.variants] == ["production"]
    (rolled,) = server_events(get_current_settings().api.url, CANARY_ROLLED_BACK)
    assert rolled["payload"]["canary"] == "sha256:canary"
    assert rolled["payload"]["reason"] == f"online quality: {canary.worse_than_production}"

    with judge_server("garbage") as judge:
        monkeypatch.setenv("LOCKGATE_EVALUATION__JUDGE_BASE_URL", judge.base_url)
        again = {q.variant: q for q in online_eval(QueryDriftParams(home=str(home), window=60))}
    assert again["production"].judge_missing == 20 and again["production"].faithfulness is not None
    assert again["production"].faithfulness.n == 0, "a judge's garbage is no score, never a guess"
    assert again["production"].top_similarity.mean == production.top_similarity.mean
