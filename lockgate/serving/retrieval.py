"""Retrieval and prompt rendering for the gateway: the variant's index, the variant's prompt version."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lockgate.embeddings import Embedder
from lockgate.errors import ConfigError
from lockgate.serving.manifest import Variant
from lockgate.signing import ArtifactSigning
from lockgate.stores import VectorStore


class IndexRetriever:
    """Top-k chunk texts from the vector store a variant names (stores opened once, then kept)."""

    def __init__(self, embedder: Embedder, open_store: Callable[[str, str], VectorStore], top_k: int) -> None:
        self.embedder = embedder
        self.open_store = open_store
        self.top_k = top_k
        self._stores: dict[tuple[str, str], VectorStore] = {}
        self._lock = threading.Lock()

    def _store(self, uri: str, collection: str) -> VectorStore:
        with self._lock:
            store = self._stores.get((uri, collection))
            if store is None:
                store = self._stores[(uri, collection)] = self.open_store(uri, collection)
            return store

    def contexts(self, variant: Variant, question: str) -> list[str]:
        if self.top_k == 0 or not variant.index_uri or not variant.index_collection:
            return []
        store = self._store(variant.index_uri, variant.index_collection)
        hits = store.search(self.embedder.encode([question]), self.top_k)
        return [h.text for h in hits[0]] if hits else []


class PromptBook:
    """Renders a question and its context with a prompt version: the built-in template, a prompt
    file, or the copy the prompt registry keeps of every registered version (so a version whose
    file was edited since can still be served, and rolled back to).

    Versions are resolved once and kept: a prompt version is content-addressed, so it never changes.
    """

    def __init__(
        self,
        prompts_dir: Path | None = None,
        registry_root: Path | None = None,
        signing: ArtifactSigning | None = None,
    ) -> None:
        self.prompts_dir = prompts_dir
        self.registry_root = registry_root
        self.signing = signing  # with a signer, a registered prompt is served only from its verified copy
        self._renderers: dict[str, Callable[[str, str], str]] = {}
        self._lock = threading.Lock()

    def _resolve(self, version: str) -> Callable[[str, str], str]:
        from lockgate import prompts

        if version == prompts.GROUNDED_QA.version:
            return prompts.GROUNDED_QA.render
        if self.prompts_dir is not None and hasattr(prompts, "prompt_files"):
            for path in prompts.prompt_files(self.prompts_dir):
                try:
                    spec = prompts.load_prompt(path)
                except ConfigError:
                    continue
                if spec.version == version:
                    return _file_renderer(spec)
        registered = self._registered(version)
        if registered is not None:
            return _file_renderer(registered)
        raise ConfigError(
            f"serving manifest: prompt version {version!r} is neither built in, nor a file in {self.prompts_dir}, "
            "nor registered in the prompt registry"
        )

    def _registered(self, version: str) -> Any:
        """The prompt registry's copy of ``version`` (``name@hex``), or None."""
        name = version.split("@", 1)[0]
        if self.registry_root is None or "@" not in version or not (self.registry_root / "prompts" / name).is_dir():
            return None
        from lockgate.registry.prompts import PromptRegistry

        try:
            spec = PromptRegistry(self.registry_root, name, signing=self.signing).spec(version)
        except ConfigError:
            return None
        return spec if spec.version == version else None

    def render(self, version: str, question: str, context: str) -> str:
        with self._lock:
            renderer = self._renderers.get(version)
            if renderer is None:
                renderer = self._renderers[version] = self._resolve(version)
        return renderer(question, context)


def _file_renderer(spec: Any) -> Callable[[str, str], str]:
    def render(question: str, context: str) -> str:
        return str(spec.render({"question": question, "context": context}))

    return render
