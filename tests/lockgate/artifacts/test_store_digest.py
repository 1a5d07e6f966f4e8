from __future__ import annotations

from pathlib import Path

from lockgate.artifacts import ArtifactStore
from lockgate.digest import digest_json, digest_tree


def test_digest_json_is_order_independent_for_keys() -> None:
    assert digest_json({"a": 1, "b": [1, 2]}) == digest_json({"b": [1, 2], "a": 1})
    assert digest_json({"a": 1}) != digest_json({"a": 2})


def test_digest_tree_depends_on_content_and_names_only(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        (d / "sub").mkdir(parents=True)
        (d / "sub" / "x.txt").write_text("x")
    assert digest_tree(a) == digest_tree(b)
    (b / "sub" / "x.txt").write_text("y")
    assert digest_tree(a) != digest_tree(b)


def test_commit_is_content_addressed_and_deduplicates(store: ArtifactStore) -> None:
    paths = []
    for _ in range(2):
        staged = store.staging("thing")
        (staged / "f").write_text("same")
        digest, path = store.commit("things", staged)
        paths.append(path)
    assert paths[0] == paths[1] and (paths[0] / "f").read_text() == "same"
    assert not any((store.root / ".staging").iterdir())
    assert digest == digest_tree(paths[0])
