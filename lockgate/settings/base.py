"""The base of every settings area."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class Area(BaseModel):
    """One area of the settings: unknown keys, NaN and infinity are errors, values never change."""

    # No infinities or NaNs anywhere: an infinite threshold silently switches a check off.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    # Fields that say where something is (a path, a URI) or how a stage runs, not what it
    # computes: cache keys and work folders leave them out. What a path points at enters
    # those keys by its content digest instead (base model, embedder weights, index build).
    NOT_IN_RECIPE: ClassVar[frozenset[str]] = frozenset()

    def recipe(self) -> dict[str, Any]:
        """The settings that determine a stage's result."""
        return self.model_dump(exclude=set(self.NOT_IN_RECIPE))
