from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lockgate.errors import DataError
from lockgate.readers import read_source, source_digest

GOOD = {"instruction": "What is A?", "output": "A is one."}


def records(path: Path, **kw: object) -> list[tuple[int, str | None, dict[str, object] | None, bool]]:
    return [(r.line, r.error, r.value, r.blank) for r in read_source(str(path), **kw)]  # type: ignore[arg-type]


def test_jsonl_bom_blank_lines_and_crlf(tmp_path: Path) -> None:
    src = tmp_path / "a.jsonl"
    src.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD).encode() + b"\r\n\r\n" + json.dumps(GOOD).encode() + b"\n")
    assert records(src) == [(1, None, GOOD, False), (2, None, None, True), (3, None, GOOD, False)]


def test_jsonl_bad_records_cost_one_row_each(tmp_path: Path) -> None:
    src = tmp_path / "a.jsonl"
    lines = [
        json.dumps(GOOD).encode(),
        b'{"instruction": "caf\xe9", "output": "latin-1 byte"}',
        b'{"n": ' + b"9" * 5000 + b"}",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"instruction": "a\x00b"}',
        b"[1, 2]",
        json.dumps(GOOD).encode(),
    ]
    src.write_bytes(b"\n".join(lines) + b"\n")
    got = records(src)
    assert [g[0] for g in got] == [1, 2, 3, 4, 5, 6, 7]
    assert got[0][2] == GOOD and got[6][2] == GOOD
    assert "not valid utf-8 (byte 20)" in (got[1][1] or "")
    assert "invalid JSON" in (got[2][1] or "") and "digits" in (got[2][1] or "")
    assert "nested too deeply" in (got[3][1] or "")
    assert "invalid JSON" in (got[4][1] or "")
    assert got[5][1] == "expected an object, got list"


def test_jsonl_declared_encoding(tmp_path: Path) -> None:
    src = tmp_path / "a.jsonl"
    src.write_bytes(json.dumps({"instruction": "café?", "output": "oui"}, ensure_ascii=False).encode("latin-1") + b"\n")
    assert records(src)[0][1] is not None
    assert records(src, encoding="latin-1")[0][2] == {"instruction": "café?", "output": "oui"}


def test_csv_ragged_rows_and_unterminated_quote_keep_their_neighbours(tmp_path: Path) -> None:
    src = tmp_path / "a.csv"
    src.write_bytes(
        b"\xef\xbb\xbfinstruction,output\r\n"
        b'"What is A?","A is one."\r\n'
        b"What is B?,B is two, and more\r\n"
        b'"What is C?","C is\r\nthree."\r\n'
        b'"What is D?,"never closed\r\n'
        b"What is E?,E is five.\r\n"
        b"\r\n"
        b"What is F?,F is six.\r\n"
    )
    got = records(src)
    assert got[0] == (2, None, {"instruction": "What is A?", "output": "A is one."}, False)
    assert got[1][0] == 3 and got[1][1] == "expected 2 fields, got 3 (line 3)"
    assert got[2] == (4, None, {"instruction": "What is C?", "output": "C is\nthree."}, False)
    assert got[3][0] == 6 and got[3][1] is not None
    assert (7, None, {"instruction": "What is E?", "output": "E is five."}, False) in got
    assert (8, None, None, True) in got
    assert got[-1] == (9, None, {"instruction": "What is F?", "output": "F is six."}, False)


def test_csv_unterminated_quote_at_the_end(tmp_path: Path) -> None:
    src = tmp_path / "a.csv"
    src.write_text('instruction,output\nWhat is A?,A is one.\n"What is B?,B\nWhat is C?,C is three.\n')
    got = records(src, max_record_lines=5)
    assert got[0][2] == {"instruction": "What is A?", "output": "A is one."}
    assert got[1][0] == 3 and "unterminated quote" in (got[1][1] or "")
    assert got[2] == (4, None, {"instruction": "What is C?", "output": "C is three."}, False)


def test_parquet_and_fsspec_urls(tmp_path: Path) -> None:
    import fsspec

    table = pa.table({"instruction": ["What is A?", "What is B?"], "output": ["A is one.", "B is two."]})
    pq.write_table(table, tmp_path / "a.parquet")
    got = records(tmp_path / "a.parquet")
    assert [(g[0], g[2]) for g in got] == [
        (1, {"instruction": "What is A?", "output": "A is one."}),
        (2, {"instruction": "What is B?", "output": "B is two."}),
    ]
    with fsspec.open("memory://lockgate-test/a.jsonl", "wb") as fh:
        fh.write((json.dumps(GOOD) + "\n").encode())
    assert [r.value for r in read_source("memory://lockgate-test/a.jsonl")] == [GOOD]
    local = tmp_path / "b.jsonl"
    local.write_text(json.dumps(GOOD) + "\n")
    assert [r.value for r in read_source(f"file://{local}")] == [GOOD]
    assert source_digest(f"file://{local}") == source_digest(str(local))


def test_missing_unsupported_and_unreadable_sources(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        list(read_source(str(tmp_path / "nope.jsonl")))
    with pytest.raises(DataError, match="not found"):
        list(read_source("memory://lockgate-test/nope.jsonl"))
    with pytest.raises(DataError, match="unsupported source format"):
        list(read_source(str(tmp_path / "x.xml")))
    with pytest.raises(DataError, match=r"cannot open this URL: .*gcsfs"):
        list(read_source("gs://lockgate-test-bucket/data.jsonl"))  # no gcsfs here: refused before any traffic
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        list(read_source(str(tmp_path / "bad.parquet")))


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (b"instr\xe9ction,output\n", r"bad\.csv:1: the CSV header cannot be read: not valid utf-8"),
        (b'"instruction,output\n', r"bad\.csv:1: the CSV header cannot be read: unterminated quote"),
    ],
)
def test_a_csv_header_that_cannot_be_read_stops_the_file(tmp_path: Path, header: bytes, reason: str) -> None:
    # Otherwise the first data record would quietly become the header and its row be lost.
    (tmp_path / "bad.csv").write_bytes(header + b"What is A?,A is one.\nWhat is B?,B is two.\n")
    with pytest.raises(DataError, match=reason):
        list(read_source(str(tmp_path / "bad.csv"), max_record_lines=2))


def test_a_bad_csv_header_is_named_by_position_not_quoted(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("jane.doe@example.com,,jane.doe@example.com\na,b,c\n")
    with pytest.raises(DataError) as err:
        list(read_source(str(tmp_path / "bad.csv")))
    assert str(err.value).endswith("column 2 has no name; column 3 repeats an earlier name")
    assert "jane" not in str(err.value)
