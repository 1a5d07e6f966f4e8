"""The fsspec artifact store: the local store's contract at a URL, through a local cache.

Run on ``memory://``, a ``file://`` URL and a plain folder, all through fsspec.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import fsspec
import pytest
from pydantic import BaseModel

from lockgate.artifacts import open_artifacts
from lockgate.artifacts.fsspec import ERROR_MAP, MARKER, FsspecArtifactStore, translate_fsspec_error
from lockgate.digest import digest_tree, short
from lockgate.errors import ConfigError, DataError, LockgateError

OpenStore = Callable[[str], FsspecArtifactStore]


@pytest.fixture(params=["memory", "file-url", "folder"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "memory":
        location = f"memory://lockgate-tests/{uuid.uuid4().hex}"
        yield location
        fs, root = fsspec.core.url_to_fs(location)
        if fs.exists(root):
            fs.rm(root, recursive=True)
    elif request.param == "file-url":
        yield (tmp_path / "bucket").as_uri()
    else:
        yield str(tmp_path / "bucket")


@pytest.fixture
def open_store(url: str, tmp_path: Path) -> OpenStore:
    """A store on the test's URL with its own cache: a second cache is a second machine."""
    return lambda cache: FsspecArtifactStore(url, tmp_path / cache)


def _build(store: FsspecArtifactStore, text: str = "same") -> Path:
    staged = store.staging("thing")
    (staged / "sub").mkdir()
    (staged / "sub" / "f.txt").write_text(text)
    (staged / "g.txt").write_text("g")
    return staged


def _remote(store: FsspecArtifactStore, kind: str, digest: str) -> str:
    """Where the artifact's folder is on the store's filesystem."""
    return f"{fsspec.core.url_to_fs(store.url)[1].rstrip('/')}/{kind}/{short(digest, 16)}"


class _Record(BaseModel):
    path: str
    weights_path: str
    note: str


def test_commit_uploads_and_keeps_a_local_copy_that_locate_and_relocate_find(open_store: OpenStore) -> None:
    store = open_store("cache")
    digest, path = store.commit("things", _build(store))
    assert path == store.path_of("things", digest) == store.root / "things" / short(digest, 16)
    assert (path / "sub" / "f.txt").read_text() == "same" and digest == digest_tree(path)
    remote = _remote(store, "things", digest)
    marker = json.loads(store.fs.cat_file(f"{remote}/{MARKER}"))
    assert marker == {"digest": digest, "files": {"g.txt": 1, "sub/f.txt": 4}}
    assert store.fs.cat_file(f"{remote}/sub/f.txt") == b"same"
    assert not any((store.root / ".staging").iterdir())
    # A path recorded under another cache (a moved checkout) maps into this one.
    elsewhere = f"/old/cache/things/{short(digest, 16)}/sub/f.txt"
    assert store.locate(elsewhere) == str(path / "sub" / "f.txt")
    record = store.relocate(_Record(path=elsewhere, weights_path="/not/an/artifact", note=elsewhere))
    assert record.path == str(path / "sub" / "f.txt")
    assert record.weights_path == "/not/an/artifact" and record.note == elsewhere


def test_a_second_commit_of_the_same_content_uploads_nothing(
    open_store: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store("cache")
    first = store.commit("things", _build(store))

    def no_upload(*_a: object, **_k: object) -> None:
        raise AssertionError("the artifact was uploaded again")

    monkeypatch.setattr(store.fs, "put_file", no_upload)
    assert store.commit("things", _build(store)) == first
    # A second machine committing the same content finds it complete at the URL too.
    assert open_store("other-cache").commit("things", _build(store))[0] == first[0]
    assert not any((store.root / ".staging").iterdir())


def test_a_fresh_cache_reads_artifacts_back_from_the_url(open_store: OpenStore) -> None:
    writer = open_store("writer-cache")
    digest, path = writer.commit("things", _build(writer, "shared"))
    reader = open_store("reader-cache")
    local = reader.locate(str(path / "sub" / "f.txt"))
    assert local == str(reader.root / "things" / short(digest, 16) / "sub" / "f.txt")
    assert Path(local).read_text() == "shared"
    assert digest_tree(reader.root / "things" / short(digest, 16)) == digest, "the marker stays at the URL"
    # path_of fetches too: cache reuse (``path_of(...).exists()``) works on a fresh machine.
    third = open_store("third-cache")
    assert (third.path_of("things", digest) / "g.txt").read_text() == "g"


def test_a_half_uploaded_artifact_is_not_taken_as_complete(open_store: OpenStore) -> None:
    writer = open_store("writer-cache")
    staged = _build(writer)
    digest = digest_tree(staged)
    remote = _remote(writer, "things", digest)
    # What a writer that died before its marker leaves behind.
    writer.fs.makedirs(f"{remote}/sub", exist_ok=True)
    writer.fs.pipe_file(f"{remote}/sub/f.txt", b"sa")
    reader = open_store("reader-cache")
    recorded = f"/elsewhere/things/{short(digest, 16)}/sub/f.txt"
    assert reader.locate(recorded) == recorded, "no marker: the URL does not hold the artifact"
    assert not reader.path_of("things", digest).exists()
    # The next commit uploads it whole.
    writer.commit("things", staged)
    assert Path(open_store("late-cache").locate(recorded)).read_text() == "same"


def test_an_artifact_missing_a_file_at_the_url_is_a_data_error_naming_it(open_store: OpenStore, url: str) -> None:
    writer = open_store("writer-cache")
    digest, path = writer.commit("things", _build(writer))
    writer.fs.rm(f"{_remote(writer, 'things', digest)}/sub/f.txt")
    reader = open_store("reader-cache")
    with pytest.raises(DataError, match=f"artifact store {url.rstrip('/')}: reading things/{short(digest, 16)}"):
        reader.locate(str(path))
    assert not (reader.root / "things" / short(digest, 16)).exists()
    assert not any((reader.root / ".staging").iterdir()), "a failed download leaves no debris"


def test_paths_outside_the_store_and_unknown_artifacts_come_back_unchanged(open_store: OpenStore) -> None:
    store = open_store("cache")
    for path in ("/data/train.jsonl", f"/x/things/{'0' * 16}/f.txt", "relative/file"):
        assert store.locate(path) == path
    assert store.scratch("run-1") == store.root / "work" / "run-1" and store.scratch("run-1").is_dir()


@pytest.mark.parametrize(("raised", "becomes"), sorted(ERROR_MAP.items(), key=lambda kv: kv[0].__name__))
def test_every_mapped_error_becomes_the_lockgate_error_of_its_entry(
    raised: type[Exception],
    becomes: type[LockgateError],
    open_store: OpenStore,
    url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = open_store("cache")

    def failing(*_a: object, **_k: object) -> None:
        raise raised("boom")

    monkeypatch.setattr(store.fs, "put_file", failing)
    with pytest.raises(becomes, match=f"artifact store {url.rstrip('/')}: committing things/") as caught:
        store.commit("things", _build(store))
    assert type(caught.value) is becomes and isinstance(caught.value.__cause__, raised)


def test_errors_map_by_their_most_specific_type() -> None:
    assert isinstance(translate_fsspec_error(FileNotFoundError("gone"), "here"), DataError)
    assert isinstance(translate_fsspec_error(PermissionError("no"), "here"), ConfigError)
    assert translate_fsspec_error(KeyError("x"), "here") is None


def test_open_artifacts_picks_the_store_by_url(tmp_path: Path) -> None:
    store = open_artifacts(f"memory://lockgate-tests/{uuid.uuid4().hex}", tmp_path / "cache")
    assert isinstance(store, FsspecArtifactStore) and store.root == tmp_path / "cache"
    with pytest.raises(ValueError, match="needs a local cache folder"):
        open_artifacts("memory://lockgate-tests/x")
    with pytest.raises(ConfigError, match="artifact store nosuchfs://bucket"):
        open_artifacts("nosuchfs://bucket/artifacts", tmp_path / "cache")
