"""Blue/green collections: a new embedder builds beside the serving one; the alias moves only
after a complete build (or on `index switch`), and rollback serves the old one again."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lockgate.artifacts import ArtifactStore
from lockgate.corpus import load_corpus
from lockgate.errors import ConfigError, TransientError
from lockgate.refresh import point_store_alias, refresh_generation, switch_after_gates, vector_digest
from lockgate.stores import StoredChunk, VectorStore
from lockgate.stores.aliases import IndexAliases, physical_collection
from lockgate.stores.milvus import MilvusStore
from tests.conftest import EXAMPLES, ROOT
from tests.lockgate.test_corpus_refresh import FlakyStore, HashEmbedder


class BlueGreen:
    """A Milvus Lite file with a logical collection ``docs``, two embedders and the sample corpus."""

    def __init__(self, tmp_path: Path) -> None:
        self.uri = str(tmp_path / "index" / "m.db")
        self.aliases = IndexAliases(tmp_path / "index" / "aliases.json")
        self.chunks = load_corpus(EXAMPLES / "corpus", 600)
        self.old, self.new = HashEmbedder("old"), HashEmbedder("new")

    def opener(self, physical: str) -> VectorStore:
        return MilvusStore(self.uri, physical)

    def logical_manifest(self) -> dict[str, str]:
        with MilvusStore(self.uri, "docs") as reader:  # what a reader of the logical name sees (a Milvus alias)
            return reader.manifest()


def test_a_new_embedder_builds_beside_the_serving_collection(tmp_path: Path, store: ArtifactStore) -> None:
    bg = BlueGreen(tmp_path)
    uri, aliases, chunks, old, new = bg.uri, bg.aliases, bg.chunks, bg.old, bg.new
    opener, logical_manifest = bg.opener, bg.logical_manifest

    with MilvusStore(uri, "docs") as before:  # an index from before blue/green, under the logical name
        before.ensure_collection(32)
        before.upsert([StoredChunk("legacy", "d", "x.md", "", "old")], np.ones((1, 32), dtype=np.float32))

    first, move = refresh_generation(chunks, opener, old, store, aliases, "docs", uri, switch=False)
    blue = physical_collection("docs", old.identity)
    assert first.collection == blue and move is not None and aliases.serving("docs") == blue, "first build serves"
    blue_manifest = {c.chunk_id: vector_digest(c, old.identity) for c in chunks}
    assert logical_manifest() == blue_manifest
    with MilvusStore(uri, "docs__legacy") as legacy:
        assert legacy.manifest() == {"legacy": "d"}, "the old collection is renamed, not dropped"

    # A new embedder whose refresh fails half-way: nothing is recorded, the old one keeps serving.
    def flaky(physical: str) -> VectorStore:
        return FlakyStore(MilvusStore(uri, physical), rate=1.0, seed=1)

    with pytest.raises(TransientError):
        refresh_generation(chunks, flaky, new, store, aliases, "docs", uri, switch=True)
    assert aliases.serving("docs") == blue and len(aliases.state("docs").generations) == 1

    green_build, move = refresh_generation(chunks, opener, new, store, aliases, "docs", uri, switch=False)
    green = physical_collection("docs", new.identity)
    assert green != blue and green_build.collection == green and move is None, "manual: the alias waits"
    assert aliases.serving("docs") == blue

    assert logical_manifest() == blue_manifest, "readers keep the serving generation while green is built"

    switched = aliases.switch("docs")
    point_store_alias(opener, "docs", switched.current)
    assert (switched.previous, switched.current, aliases.serving("docs")) == (blue, green, green)
    assert logical_manifest() == {c.chunk_id: vector_digest(c, new.identity) for c in chunks}
    back = aliases.rollback("docs")
    point_store_alias(opener, "docs", back.current)
    assert (back.current, aliases.serving("docs"), aliases.state("docs").previous) == (blue, blue, green)
    assert logical_manifest() == blue_manifest
    with pytest.raises(ConfigError, match="already serves"):
        aliases.switch("docs", to=blue)
    with pytest.raises(ConfigError, match="not a complete build"):
        aliases.switch("docs", to="docs__nope")

    # Both generations are whole: each holds exactly its embedder's vectors of every chunk.
    for physical, emb in ((blue, old), (green, new)):
        with MilvusStore(uri, physical) as vs:
            assert vs.manifest() == {c.chunk_id: vector_digest(c, emb.identity) for c in chunks}

    _, auto = refresh_generation(chunks, opener, new, store, aliases, "docs", uri, switch=True)
    assert auto is not None and auto.current == green, "auto: a complete build is served"


def test_after_gates_the_new_generation_serves_only_once_a_release_with_it_passed(
    tmp_path: Path, store: ArtifactStore
) -> None:
    bg = BlueGreen(tmp_path)
    uri, aliases, chunks, old, new = bg.uri, bg.aliases, bg.chunks, bg.old, bg.new
    opener, logical_manifest = bg.opener, bg.logical_manifest
    blue = refresh_generation(chunks, opener, old, store, aliases, "docs", uri, switch=False)[0].collection
    green = refresh_generation(chunks, opener, new, store, aliases, "docs", uri, switch=False)[0].collection
    assert aliases.serving("docs") == blue
    assert switch_after_gates(opener, aliases, "docs", green, passed=False) is None, "a rejected release: no switch"
    assert aliases.serving("docs") == blue
    assert logical_manifest() == {c.chunk_id: vector_digest(c, old.identity) for c in chunks}
    move = switch_after_gates(opener, aliases, "docs", green, passed=True)
    assert move is not None and (move.previous, move.current) == (blue, green) and "gates" in move.reason
    assert aliases.serving("docs") == green
    assert logical_manifest() == {c.chunk_id: vector_digest(c, new.identity) for c in chunks}, "readers follow"
    assert switch_after_gates(opener, aliases, "docs", green, passed=True) is None, "already serving: nothing moves"
    assert aliases.state("docs").previous == blue, "the old generation stays for rollback"


def test_index_commands_show_and_move_the_alias(tmp_path: Path, store: ArtifactStore) -> None:
    home = tmp_path / "home"
    uri = str(home / "index" / "milvus.db")
    aliases = IndexAliases(home / "index" / "aliases.json")
    chunks = load_corpus(EXAMPLES / "corpus", 600)
    logical = "quillstone_chunks"  # the embedded profile's collection
    for name in ("old", "new"):
        refresh_generation(
            chunks, lambda p: MilvusStore(uri, p), HashEmbedder(name), store, aliases, logical, uri, switch=False
        )

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        return subprocess.run(
            [sys.executable, "-m", "flows", "--home", str(home), "index", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=120,
        )

    blue = physical_collection(logical, HashEmbedder("old").identity)
    green = physical_collection(logical, HashEmbedder("new").identity)
    status = cli("status")
    assert status.returncode == 0, status.stderr
    assert f"serving:  {blue}" in status.stdout and f"* {blue}" in status.stdout and f"  {green}" in status.stdout
    moved = cli("switch")
    assert moved.returncode == 0 and f"{blue} -> {green}" in moved.stdout
    back = cli("rollback", "--reason", "answers got worse")
    assert back.returncode == 0 and f"{green} -> {blue} (answers got worse)" in back.stdout
    again = cli("switch", "--to", blue)
    assert again.returncode == 2 and again.stderr.strip().endswith("already serves")
