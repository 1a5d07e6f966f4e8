"""build_gateway wires the gateway from settings: hashed keys, the manifest, the index the variant names."""

from __future__ import annotations

from pathlib import Path

import pytest

from lockgate.embeddings import SentenceTransformerEmbedder
from lockgate.prompts import GROUNDED_QA
from lockgate.serving import ServingManifest, Variant, add_key, build_gateway, write_manifest
from lockgate.settings import load_settings
from lockgate.stores import StoredChunk, open_store
from lockgate.workspace import ServingPaths


@pytest.mark.slow  # MiniLM and Milvus Lite start
def test_the_gateway_retrieves_from_the_index_the_manifest_names(tmp_path: Path) -> None:
    settings = load_settings(overrides={"home": str(tmp_path)})
    texts = ["Pickers charge at dock bays in aisle nine.", "Shuttle firmware ships on Tuesdays."]
    store = open_store(settings.vector_store.backend, settings.vector_uri, "served_chunks", settings.vector_store)
    vectors = SentenceTransformerEmbedder().encode(texts)
    store.ensure_collection(vectors.shape[1])
    store.upsert([StoredChunk(f"c{i}", f"d{i}", "doc.md", "t", t) for i, t in enumerate(texts)], vectors)
    close = getattr(store, "close", None)
    if close:
        close()
    where = ServingPaths(settings)
    variant = Variant(
        name="production",
        model_digest="sha256:m",
        served_model="m",
        engine_url="http://127.0.0.1:9",
        model_path="/m",
        prompt_version=GROUNDED_QA.version,
        index_uri=settings.vector_uri,
        index_collection="served_chunks",
        weight=1.0,
    )
    write_manifest(where.manifest, ServingManifest(variants=(variant,), max_model_len=256))
    key = add_key(where.keys, "alice", 100, 10)

    gateway = build_gateway(settings, lambda *event: None)
    assert gateway.keys.lookup(key) is not None
    assert gateway.manifests.current().production == variant
    assert gateway.retriever.contexts(variant, "Where do pickers charge?") == [texts[0]]
    prompt = gateway.render(variant.prompt_version, "Where do pickers charge?", texts[0])
    assert prompt == GROUNDED_QA.render("Where do pickers charge?", texts[0])
