"""Planted secrets never get past prep: a whole release run on data and a corpus seeded with an
e-mail, a phone number, a card number, an API key and an IP address leaves none of them
anywhere under the home folder (artifacts, registry, index, tokenizer, scratch), in Prefect's
database, or in the run's output (several minutes)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from flows.params import ReleaseParams
from flows.pipeline import release
from lockgate.errors import GateRejected
from tests.conftest import EXAMPLES

pytestmark = pytest.mark.slow

SECRETS = {
    "email": "planted.person@quillstone-mail.example",
    "phone": "+1 415-555-0199",
    "card": "4539 1488 0343 6467",
    "key": "sk-live-9Zq8Xw7Vu6Ts5Rq4Po3Nm2Lk1Jh",
    "ip": "203.0.113.45",
}
# Each secret also in the other spellings a file could hold it in.
NEEDLES = [
    *SECRETS.values(),
    "planted.person",
    "4539148803436467",
    "415-555-0199",
    "9Zq8Xw7Vu6Ts5Rq4Po3Nm2Lk1Jh",
    "203.0.113.45",
]


def _plant(tmp_path: Path) -> tuple[list[str], Path]:
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(EXAMPLES / "data" / "qa.jsonl", data / "qa.jsonl")
    s = SECRETS
    planted = [
        {
            "instruction": "Who do I contact about a stuck Relay?",
            "context": f"Write to {s['email']} or call {s['phone']}.",
            "output": f"Write to {s['email']} or call {s['phone']}.",
            "source_doc": "relay.md",
        },
        {
            "instruction": "Which card pays for Relay spare parts?",
            "context": f"Spare parts are paid with card {s['card']}.",
            "output": f"Spare parts are paid with card {s['card']}.",
            "source_doc": "relay.md",
        },
        {
            "instruction": "How does the Relay reach the planner API?",
            "context": f"The Relay calls the planner at {s['ip']} with key {s['key']}.",
            "output": f"The Relay calls the planner at {s['ip']} with key {s['key']}.",
            "source_doc": "relay.md",
        },
        # Quarantined rows keep a copy: it must be redacted too.
        {"instruction": f"Broken row from {s['email']} with key {s['key']}"},
    ]
    (data / "planted.jsonl").write_text("\n".join(json.dumps(r) for r in planted) + "\n")
    corpus = tmp_path / "corpus"
    shutil.copytree(EXAMPLES / "corpus", corpus)
    (corpus / "contacts.md").write_text(
        "# Contacts\n\n"
        f"The on-call engineer reads {s['email']} and answers {s['phone']}.\n\n"
        f"The planner API lives at {s['ip']}; its key is {s['key']}. Billing uses card {s['card']}.\n"
    )
    return [str(data / "qa.jsonl"), str(data / "planted.jsonl")], corpus


def _files_holding_secrets(root: Path) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        for needle in NEEDLES:
            if needle.encode() in data or needle.encode("utf-16-le") in data:
                found.append(f"{path}: {needle}")
    return found


def test_no_planted_secret_survives_a_release(
    prefect_harness: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from prefect.settings import get_current_settings

    sources, corpus = _plant(tmp_path)
    monkeypatch.setenv("LOCKGATE_DATA__SOURCES", json.dumps(sources))
    monkeypatch.setenv("LOCKGATE_DATA__CORPUS_DIR", str(corpus))
    home = tmp_path / "home"
    caplog.set_level(logging.DEBUG)
    try:
        summary = release(ReleaseParams(home=str(home), max_steps=30))
        outputs = summary.outputs
    except GateRejected as rejected:  # a short run may not beat the champion: the check holds either way
        outputs = getattr(rejected.details, "outputs", {})
    assert (home / "artifacts" / "datasets").is_dir() and outputs is not None

    snapshot = next(p for p in (home / "artifacts" / "datasets").iterdir() if p.is_dir())  # beside it: its .sig
    card = (snapshot / "CARD.md").read_text()
    for kind in ("email", "phone", "card", "ip", "secret"):
        assert f"| {kind} | 0 |" not in card, f"no {kind} was found: the test plants nothing"
    everything = "\n".join(p.read_text() for p in snapshot.glob("*.jsonl"))
    assert "[EMAIL]" in everything and "[SECRET]" in everything and "[CARD]" in everything

    assert len(_files_holding_secrets(tmp_path / "data")) >= len(SECRETS), "the search finds what was planted"
    assert _files_holding_secrets(home) == []
    database = get_current_settings().server.database.connection_url
    assert database is not None
    url = database.get_secret_value() if hasattr(database, "get_secret_value") else str(database)
    db_path = Path(url.split("///", 1)[-1])
    assert db_path.is_file(), db_path
    assert _files_holding_secrets(db_path.parent) == []

    out, err = capfd.readouterr()
    logs = "\n".join(r.getMessage() for r in caplog.records)
    for needle in NEEDLES:
        assert needle not in out and needle not in err and needle not in logs, needle
