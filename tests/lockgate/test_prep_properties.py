"""Property tests: files mixing good rows with every kind of bad record.

Whatever the mix, every good row reaches the snapshot as written, in any script and over
several lines (text is already clean and holds no PII, so nothing changes it), every other
record is accounted for with a reason, nothing raises, and input == sum of outcomes.
"""

from __future__ import annotations

import csv
import io
import json
import unicodedata
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lockgate._io import load_jsonl
from lockgate.prep import PrepResult, prepare
from lockgate.settings import DataSettings

# Letters of any script (no digits: numbers tell rows apart, and digit runs are PII candidates).
WORDS = st.text(alphabet=st.characters(categories=["L"]), min_size=1, max_size=8)
# Words on one or more lines; already clean (NFC, no trailing spaces), so nothing may change them.
SENTENCE = st.lists(st.tuples(WORDS, st.sampled_from([" ", " ", "\n"])), min_size=2, max_size=8).map(
    lambda parts: unicodedata.normalize("NFC", "".join(w + sep for w, sep in parts[:-1]) + parts[-1][0])
)
PROPS = settings(
    max_examples=25,
    deadline=None,
    database=None,  # no example database left in the checkout
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def canonical(row: dict[str, str]) -> str:
    return json.dumps(row, sort_keys=True)


def good_row(n: int, question: str, answer: str) -> dict[str, str]:
    # The number makes every good row distinct: rows with different numbers are never duplicates.
    return {"instruction": f"Question {n}: {question}?", "output": f"Answer {n}: {answer}.", "context": question}


BAD_JSONL: list[tuple[bytes, str]] = [
    (b'{"instruction": "broken", ', "invalid JSON"),
    (b'{"instruction": 5, "output": "five"}', "expected a string"),
    (b'{"instruction": ["a"], "output": "list"}', "expected a string"),
    (b'{"instruction": "No answer here?"}', "missing required field"),
    (b'{"instruction": "caf\xe9?", "output": "latin-1"}', "not valid utf-8"),
    (b'{"instruction": "a\x00b", "output": "nul"}', "invalid JSON"),
    (b'{"instruction": "big", "output": ' + b"7" * 5000 + b"}", "invalid JSON"),
    (b'{"instruction": "inf", "output": 1e999}', "expected a string"),
    (b"[" * 50_000 + b"]" * 50_000, "invalid JSON"),
    (b'"just a string"', "expected an object"),
    (b"\x00\x01\x02", "invalid JSON"),
]

record = st.one_of(
    st.tuples(st.just("good"), SENTENCE, SENTENCE),
    st.tuples(st.just("bad"), st.integers(0, len(BAD_JSONL) - 1), st.just("")),
    st.tuples(st.just("blank"), st.sampled_from(["", "   ", "\t"]), st.just("")),
)


def check(result: PrepResult, good: list[dict[str, str]], n_bad: int, n_blank: int, reasons: list[str]) -> None:
    kept = load_jsonl(result.train_path) + load_jsonl(result.eval_path)
    expected = [{**g, "source_doc": ""} for g in good]
    assert sorted(kept, key=canonical) == sorted(expected, key=canonical)
    assert result.counts["quarantined"] == n_bad and result.counts["blank"] == n_blank
    assert result.n_input == len(good) + n_bad + n_blank
    assert result.balanced()
    set_aside = [json.loads(x) for x in result.quarantine_path.read_text().splitlines()]
    assert len(set_aside) == n_bad and all(q["reason"] for q in set_aside)
    for want in reasons:
        assert any(want in q["reason"] for q in set_aside), (want, set_aside)


@PROPS
@given(records=st.lists(record, max_size=25), bom=st.booleans(), crlf=st.booleans())
def test_jsonl_mixtures(tmp_path: Path, records: list[tuple[str, Any, str]], bom: bool, crlf: bool) -> None:
    lines: list[bytes] = []
    good: list[dict[str, str]] = []
    reasons: list[str] = []
    n_bad = n_blank = 0
    for i, (kind, a, b) in enumerate(records):
        if kind == "good":
            row = good_row(i, a, b)
            good.append(row)
            lines.append(json.dumps(row).encode())
        elif kind == "bad":
            raw, reason = BAD_JSONL[a]
            lines.append(raw)
            reasons.append(reason)
            n_bad += 1
        else:
            lines.append(a.encode())
            n_blank += 1
    eol = b"\r\n" if crlf else b"\n"
    data = (b"\xef\xbb\xbf" if bom else b"") + eol.join(lines) + (eol if lines else b"")
    work = tmp_path / f"w{len(list(tmp_path.iterdir()))}"
    work.mkdir()
    (work / "src.jsonl").write_bytes(data)
    result = prepare([work / "src.jsonl"], DataSettings(), work / "out")
    # A file that ends without a newline after blank text has no final blank record.
    check(result, good, n_bad, n_blank, reasons)


csv_record = st.one_of(
    st.tuples(st.just("good"), SENTENCE, SENTENCE),
    st.tuples(st.just("multiline"), SENTENCE, SENTENCE),
    st.tuples(st.just("nul"), SENTENCE, SENTENCE),
    st.tuples(st.just("ragged"), SENTENCE, SENTENCE),
    st.tuples(st.just("short"), SENTENCE, st.just("")),
    st.tuples(st.just("unterminated"), SENTENCE, st.just("")),
    st.tuples(st.just("badbytes"), SENTENCE, st.just("")),
    st.tuples(st.just("blank"), st.just(""), st.just("")),
)


@PROPS
@given(records=st.lists(csv_record, max_size=25), bom=st.booleans())
def test_csv_mixtures(tmp_path: Path, records: list[tuple[str, str, str]], bom: bool) -> None:
    chunks: list[bytes] = [b"instruction,output,context\n"]
    good: list[dict[str, str]] = []
    n_bad = n_blank = 0
    for i, (kind, a, b) in enumerate(records):
        row = good_row(i, a, b)
        out = io.StringIO()
        writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n")
        if kind in ("good", "multiline", "nul"):
            if kind == "multiline":
                row = {**row, "output": row["output"].replace(" ", "\n", 1)}
            good.append(row)  # exactly as written: multi-line and any script
            if kind == "nul":
                row = {**row, "instruction": row["instruction"] + "\x00"}  # the one thing cleaning removes
            writer.writerow([row["instruction"], row["output"], row["context"]])
            chunks.append(out.getvalue().encode())
        elif kind == "blank":
            chunks.append(b"\n")
            n_blank += 1
        else:
            n_bad += 1
            row = {k: v.replace("\n", " ") for k, v in row.items()}  # one bad record on one line
            if kind == "ragged":
                chunks.append(f"{row['instruction']},{row['output']},{row['context']},extra\n".encode())
            elif kind == "short":
                chunks.append(f"{row['instruction']}\n".encode())
            elif kind == "unterminated":
                chunks.append(f'"{row["instruction"]},never closed\n'.encode())
            else:
                chunks.append(b"caf\xe9," + row["output"].encode() + b",x\n")
    work = tmp_path / f"w{len(list(tmp_path.iterdir()))}"
    work.mkdir()
    (work / "src.csv").write_bytes((b"\xef\xbb\xbf" if bom else b"") + b"".join(chunks))
    result = prepare([work / "src.csv"], DataSettings(), work / "out")
    kept = load_jsonl(result.train_path) + load_jsonl(result.eval_path)
    expected = [{**g, "source_doc": ""} for g in good]
    assert sorted(kept, key=canonical) == sorted(expected, key=canonical)
    assert result.counts["quarantined"] == n_bad and result.counts["blank"] == n_blank
    assert result.n_input == len(good) + n_bad + n_blank and result.balanced()


def test_empty_files_and_a_50_mb_row(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_bytes(b"")
    (tmp_path / "empty.csv").write_bytes(b"")
    good = [good_row(i, "plain words", "more words") for i in range(3)]
    huge = json.dumps({"instruction": "Huge?", "output": "x" * 50_000_000})
    (tmp_path / "big.jsonl").write_text("\n".join([json.dumps(good[0]), huge, json.dumps(good[1])]) + "\n")
    (tmp_path / "tail.jsonl").write_text(json.dumps(good[2]))  # no final newline
    sources = [tmp_path / n for n in ("empty.jsonl", "empty.csv", "big.jsonl", "tail.jsonl")]
    result = prepare(sources, DataSettings(), tmp_path / "out")
    kept = load_jsonl(result.train_path) + load_jsonl(result.eval_path)
    assert sorted(kept, key=canonical) == sorted(({**g, "source_doc": ""} for g in good), key=canonical)
    (bad,) = [json.loads(x) for x in result.quarantine_path.read_text().splitlines()]
    assert bad["line"] == 2 and bad["field"] == "output" and "longer than 2000" in bad["reason"]
    assert len(bad["raw"]) <= 2000, "the quarantine copy is cut"
    assert result.n_input == 4 and result.balanced()
