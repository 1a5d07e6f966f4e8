from __future__ import annotations

from pathlib import Path

from lockgate.watch import check_for_change


def test_change_detected_once_then_quiet(tmp_path: Path) -> None:
    src = tmp_path / "qa.jsonl"
    src.write_text('{"instruction": "q", "output": "a"}\n')
    corpus = tmp_path / "docs"
    corpus.mkdir()
    (corpus / "a.md").write_text("# A\n\ntext\n")
    state = tmp_path / "watch" / "qa.json"

    first = check_for_change([src], corpus, state)
    assert first.changed and first.previous is None and len(first.files) == 2
    assert not check_for_change([src], corpus, state).changed

    (corpus / "a.md").write_text("# A\n\nnew text\n")
    edited = check_for_change([src], corpus, state)
    assert edited.changed and edited.previous == first.digest and edited.digest != first.digest

    (corpus / "notes.bin").write_bytes(b"\x00")
    assert not check_for_change([src], corpus, state).changed, "non-document files are ignored"
