"""What a cache hit hands the next stage is verified: every artifact a stage result points at."""

from __future__ import annotations

from pathlib import Path

import pytest

from lockgate.artifacts import LocalArtifactStore
from lockgate.records import Record
from lockgate.signing import ArtifactSigning, TamperedError, verify_record


class CachedEval(Record):
    """A stage result shaped like the eval report's: a folder and a file inside it."""

    path: str
    rows_path: str
    note_path: str = ""


def test_a_cached_result_is_verified_once_per_artifact_and_an_altered_report_is_refused(
    tmp_path: Path, signing: ArtifactSigning
) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts", signing)
    staged = store.staging("evals")
    (staged / "rows.jsonl").write_text('{"q": 1, "faithfulness": 0.4}\n')
    (staged / "judge.json").write_text("{}")
    digest, path = store.commit("evals", staged)
    report = CachedEval(digest=digest, path=str(path), rows_path=str(path / "rows.jsonl"))
    (checked,) = verify_record(signing, (report,))
    assert checked.artifact == f"evals/{path.name}" and checked.files == 2

    (path / "rows.jsonl").write_text('{"q": 1, "faithfulness": 0.9}\n')  # a better score, written by hand
    with pytest.raises(TamperedError, match=rf"^artifact evals/{path.name} refused: rows.jsonl was changed"):
        verify_record(signing, report)
