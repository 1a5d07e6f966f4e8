"""Cached stages whose files were deleted by hand are rebuilt, not trusted."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import INPUTS
from pydantic import BaseModel

from tasks.common import StageLog, outputs_exist


class Made(BaseModel):
    path: str


@task(cache_policy=INPUTS, persist_result=True)
def make_file(folder: str, name: str) -> Made:
    counter = Path(folder) / "calls"
    counter.write_text(str(int(counter.read_text()) + 1 if counter.exists() else 1))
    target = Path(folder) / name
    target.write_text("made")
    return Made(path=str(target))


def test_cache_hit_with_missing_files_is_rebuilt(prefect_harness: None, tmp_path: Path) -> None:
    stages = StageLog()
    first = stages.run_cached("make", make_file, str(tmp_path), "out.txt")
    assert stages.cached == [] and (tmp_path / "calls").read_text() == "1"

    assert stages.run_cached("make", make_file, str(tmp_path), "out.txt") == first
    assert stages.cached == ["make"] and (tmp_path / "calls").read_text() == "1"

    Path(first.path).unlink()
    rebuilt = stages.run_cached("make", make_file, str(tmp_path), "out.txt")
    assert Path(rebuilt.path).read_text() == "made"
    assert (tmp_path / "calls").read_text() == "2" and stages.cached == ["make"]


@task(cache_policy=INPUTS - "folder", persist_result=True)
def make_anywhere(folder: str, name: str) -> Made:
    return make_file.fn(folder, name)


def test_a_cache_hit_made_for_another_state_folder_is_rebuilt_here(prefect_harness: None, tmp_path: Path) -> None:
    from lockgate.artifacts import LocalArtifactStore

    mine, theirs = LocalArtifactStore(tmp_path / "mine"), LocalArtifactStore(tmp_path / "theirs")
    name = f"out-{tmp_path.name}.txt"  # a key of its own: no earlier session's cache entry
    StageLog(artifacts=theirs).run_cached("make", make_anywhere, str(theirs.root), name)
    stages = StageLog(artifacts=mine)
    made = stages.run_cached("make", make_anywhere, str(mine.root), name)
    assert Path(made.path).is_relative_to(mine.root), "never another folder's files"
    assert (mine.root / "calls").read_text() == "1" and stages.cached == []


def test_outputs_exist_looks_into_tuples(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("x")
    assert outputs_exist((Made(path=str(tmp_path / "a")), Made(path=str(tmp_path / "a"))))
    assert not outputs_exist((Made(path=str(tmp_path / "a")), Made(path=str(tmp_path / "gone"))))
