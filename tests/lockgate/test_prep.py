from __future__ import annotations

import json
from pathlib import Path

import pytest

from lockgate.errors import DataError
from lockgate.prep import load_jsonl, prepare_rows, snapshot_dataset, split_of
from lockgate.settings import DataSettings
from tests.conftest import EXAMPLES, write_jsonl


def row(q: str, a: str, ctx: str = "some context") -> str:
    return json.dumps({"instruction": q, "output": a, "context": ctx})


def test_bad_rows_are_quarantined_with_file_line_and_field(tmp_path: Path) -> None:
    src = write_jsonl(
        tmp_path / "qa.jsonl",
        [
            row("What is A?", "A is one."),
            '{"instruction": "broken", ',
            json.dumps({"instruction": "No answer?"}),
            json.dumps({"instruction": 5, "output": "five"}),
            row("What is B?", "B is two."),
        ],
    )
    result = prepare_rows([src], DataSettings())
    assert [r["instruction"] for r in result.rows] == ["What is A?", "What is B?"]
    found = {(q.line, q.field) for q in result.quarantined}
    assert found == {(2, None), (3, "output"), (4, "instruction")}
    assert all(q.source == str(src) for q in result.quarantined)
    assert "invalid JSON" in next(q.reason for q in result.quarantined if q.line == 2)


def test_exact_duplicates_dropped_and_recorded(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "qa.jsonl", [row("Q one?", "Answer one."), row("Q  one?", "Answer one.")])
    result = prepare_rows([src], DataSettings())
    assert len(result.rows) == 1
    assert len(result.duplicates) == 1 and f"{src}:1" in result.duplicates[0].reason


def test_emails_redacted(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "qa.jsonl", [row("Who to mail?", "Write to jane.doe@example.com now.")])
    result = prepare_rows([src], DataSettings())
    assert result.rows[0]["output"] == "Write to [EMAIL] now."
    assert result.redacted == 1


def test_split_is_stable_when_rows_are_added() -> None:
    rows = [{"instruction": f"q{i}", "output": f"a{i}", "context": f"c{i}"} for i in range(400)]
    before = {r["instruction"]: split_of(r, 0.2) for r in rows}
    more = rows + [{"instruction": f"new{i}", "output": f"n{i}", "context": ""} for i in range(100)]
    after = {r["instruction"]: split_of(r, 0.2) for r in more}
    assert all(after[k] == v for k, v in before.items())
    share = sum(v == "eval" for v in before.values()) / len(before)
    assert 0.1 < share < 0.3


def test_paraphrases_of_one_fact_stay_on_one_side() -> None:
    a = {"instruction": "Which port?", "output": "Port 1.", "context": "c"}
    b = {"instruction": "What port is it?", "output": "Port 1.", "context": "c"}
    assert split_of(a, 0.5) == split_of(b, 0.5)


def test_same_input_same_digest_and_snapshot_contents(tmp_path: Path, store) -> None:  # type: ignore[no-untyped-def]
    sources = [EXAMPLES / "data" / "qa.jsonl", EXAMPLES / "data" / "qa_contrib.jsonl"]
    first = snapshot_dataset(sources, DataSettings(), store)
    second = snapshot_dataset(sources, DataSettings(), store)
    assert first.digest == second.digest and first.path == second.path
    assert first.n_quarantined == 3 and first.n_duplicates == 1 and first.n_redacted == 1
    train, evals = load_jsonl(Path(first.train_path)), load_jsonl(Path(first.eval_path))
    assert len(train) == first.n_train and len(evals) == first.n_eval
    assert not {r["instruction"] for r in train} & {r["instruction"] for r in evals}
    assert "qa_contrib.jsonl" in Path(first.card_path).read_text()


def test_changed_input_changes_digest(tmp_path: Path, store) -> None:  # type: ignore[no-untyped-def]
    a = write_jsonl(tmp_path / "a.jsonl", [row(f"Question {i}?", f"Answer {i}.") for i in range(40)])
    b = write_jsonl(tmp_path / "b.jsonl", [row(f"Question {i}?", f"Answer {i}.") for i in range(41)])
    settings = DataSettings(eval_fraction=0.3)
    assert snapshot_dataset([a], settings, store).digest != snapshot_dataset([b], settings, store).digest


def test_too_many_bad_rows_fail_with_a_clear_message(tmp_path: Path, store) -> None:  # type: ignore[no-untyped-def]
    src = write_jsonl(tmp_path / "bad.jsonl", ["not json"] * 5 + [row("Fine?", "Yes it is.")])
    with pytest.raises(DataError, match=r"bad\.jsonl:1 \[row\] invalid JSON"):
        snapshot_dataset([src], DataSettings(), store)


def test_missing_and_unsupported_sources(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        prepare_rows([tmp_path / "nope.jsonl"], DataSettings())
    (tmp_path / "x.xml").write_text("<a/>")
    with pytest.raises(DataError, match="unsupported source format"):
        prepare_rows([tmp_path / "x.xml"], DataSettings())


def test_csv_source(tmp_path: Path) -> None:
    src = tmp_path / "qa.csv"
    src.write_text('instruction,output,context\n"What is C?","C is three.",ctx\n"",missing,ctx\n')
    result = prepare_rows([src], DataSettings())
    assert len(result.rows) == 1
    assert result.quarantined[0].line == 3 and result.quarantined[0].field == "instruction"


def test_other_quarantined_rows_get_their_own_card_with_the_same_digest(tmp_path: Path, store) -> None:  # type: ignore[no-untyped-def]
    good = [row(f"Question {i}?", f"Answer {i}.") for i in range(40)]
    a = write_jsonl(tmp_path / "a.jsonl", [*good, "broken one"])
    first = snapshot_dataset([a], DataSettings(eval_fraction=0.3), store)
    b = write_jsonl(tmp_path / "a.jsonl", [*good, '{"instruction": 7, "output": "x"}'])
    second = snapshot_dataset([b], DataSettings(eval_fraction=0.3), store)
    assert first.digest == second.digest, "training data is the same"
    assert first.path != second.path
    assert "expected a string" in Path(second.quarantine_path).read_text()
    assert "invalid JSON" in Path(first.quarantine_path).read_text()
