from __future__ import annotations

import json
import multiprocessing
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from lockgate.errors import LockgateError
from lockgate.registry import LocalRegistry, RevokedModel, StaleChampion


def test_aliases_history_and_rollback(tmp_path: Path) -> None:
    reg = LocalRegistry(tmp_path)
    reg.register("sha256:a", "/m/a", {"dataset": "d1"})
    reg.register("sha256:b", "/m/b", {"dataset": "d2"})
    reg.set_alias("production", "sha256:a", "first")
    before = reg.snapshot().aliases.copy()
    reg.set_alias("production", "sha256:b", "second")
    assert reg.get("production").path == "/m/b"  # type: ignore[union-attr]
    move = reg.rollback("production", "bad canary")
    assert move.current == "sha256:a"
    assert reg.snapshot().aliases == before
    last = reg.history()[-1]
    assert (last.kind, last.reason, last.previous) == ("rollback", "bad canary", "sha256:b")
    assert reg.revoked_reason("sha256:b") == "bad canary" and reg.revoked_reason("sha256:a") is None
    reg.rollback("production", "a was bad too")
    assert reg.get("production") is None, "a second rollback steps further back, not forth again"


def test_rollback_of_first_move_clears_alias(tmp_path: Path) -> None:
    reg = LocalRegistry(tmp_path)
    reg.register("sha256:a", "/m/a", {})
    reg.set_alias("candidate", "sha256:a", "x")
    reg.rollback("candidate", "undo")
    assert reg.get("candidate") is None


def test_refuses_unregistered_and_unknown_aliases(tmp_path: Path) -> None:
    reg = LocalRegistry(tmp_path)
    with pytest.raises(LockgateError, match="unregistered"):
        reg.set_alias("production", "sha256:zzz", "x")
    reg.register("sha256:a", "/m/a", {})
    with pytest.raises(LockgateError, match="unknown alias"):
        reg.set_alias("prod", "sha256:a", "x")
    with pytest.raises(LockgateError, match="no history"):
        reg.rollback("production", "x")


def test_register_is_idempotent_and_state_survives_reopen(tmp_path: Path) -> None:
    reg = LocalRegistry(tmp_path)
    first = reg.register("sha256:a", "/m/a", {"v": 1})
    again = reg.register("sha256:a", "/m/other", {"v": 2})
    assert again == first
    reg.set_alias("production", "sha256:a", "x")
    assert LocalRegistry(tmp_path).get("production") == first
    assert json.loads((tmp_path / "state.json").read_text())["aliases"]["production"] == "sha256:a"
    assert not list(tmp_path.glob(".state-*")), "temporary files must not be left behind"


def test_failed_write_leaves_previous_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reg = LocalRegistry(tmp_path)
    reg.register("sha256:a", "/m/a", {})
    reg.set_alias("production", "sha256:a", "x")
    reg.register("sha256:b", "/m/b", {})

    def boom(*_a: object, **_k: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("lockgate._io.os.replace", boom)
    with pytest.raises(OSError):
        reg.set_alias("production", "sha256:b", "y")
    monkeypatch.undo()
    assert LocalRegistry(tmp_path).get("production").digest == "sha256:a"  # type: ignore[union-attr]


def test_corrupt_state_is_a_clear_error_that_says_how_to_restore(tmp_path: Path) -> None:
    reg = LocalRegistry(tmp_path)
    reg.register("sha256:a", "/m/a", {})
    reg.set_alias("production", "sha256:a", "x")  # the write before this one is kept as state.json.bak
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(LockgateError, match=r"state\.json: registry state is corrupt") as err:
        LocalRegistry(tmp_path).get("production")
    assert "cp " in str(err.value) and "state.json.bak" in str(err.value)
    shutil.copy(tmp_path / "state.json.bak", tmp_path / "state.json")
    assert LocalRegistry(tmp_path).snapshot().versions, "the backup is a valid earlier state"


def test_revoked_model_is_refused_inside_the_lock(tmp_path: Path) -> None:
    reg = LocalRegistry(tmp_path)
    reg.record_release("sha256:a", "/m/a", {}, {}, True, None)
    reg.record_release("sha256:b", "/m/b", {}, {}, True, "sha256:a")
    reg.rollback("production", "bad canary")  # b revoked, a production
    # A gate that looked before the rollback and passed b must not bring it back.
    with pytest.raises(RevokedModel, match="bad canary"):
        reg.record_release("sha256:b", "/m/b", {}, {}, True, "sha256:a")
    with pytest.raises(RevokedModel):
        reg.set_alias("production", "sha256:b", "by hand")
    assert reg.get("production").digest == "sha256:a"  # type: ignore[union-attr]


def _churn(root: str, tag: str, rounds: int) -> dict[str, int]:
    """One process's share of the race: promotions and rollbacks against a shared registry."""
    reg = LocalRegistry(Path(root))
    done = {"promoted": 0, "rolled_back": 0}
    for i in range(rounds):
        digest = f"sha256:{tag}{i}"
        current = reg.get("production")
        try:
            action, _ = reg.record_release(
                digest, f"/m/{tag}{i}", {}, {"by": tag}, True, current.digest if current else None
            )
            done["promoted"] += action == "promoted"
        except (StaleChampion, RevokedModel):
            pass
        if i % 2:
            try:
                reg.rollback("production", f"rollback by {tag}")
                done["rolled_back"] += 1
            except LockgateError:
                pass
    return done


def test_two_processes_promoting_and_rolling_back_keep_the_state_valid(tmp_path: Path) -> None:
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(_churn, [str(tmp_path)] * 2, ["a", "b"], [50, 50]))
    state = LocalRegistry(tmp_path).snapshot()  # parses: the state is valid
    promotions = [m for m in state.history if m.alias == "production" and m.kind == "move"]
    rollbacks = [m for m in state.history if m.alias == "production" and m.kind == "rollback"]
    assert len(promotions) == sum(r["promoted"] for r in results) > 0
    assert len(rollbacks) == sum(r["rolled_back"] for r in results) > 0
    assert len([m for m in state.history if m.alias == "candidate"]) >= 1
    production = state.aliases.get("production")
    assert production is None or production not in state.revoked
    # Replaying the history gives the final aliases: no move was lost or interleaved.
    replay: dict[str, str | None] = {}
    for move in state.history:
        assert replay.get(move.alias) == move.previous, move
        replay[move.alias] = move.current
    assert {k: v for k, v in replay.items() if v} == state.aliases
    # At no point in the history did production move onto a model rolled back before.
    revoked: set[str] = set()
    for move in state.history:
        if move.alias != "production":
            continue
        assert move.current not in revoked, f"{move.current} became production after being rolled back"
        if move.kind == "rollback" and move.previous:
            revoked.add(move.previous)
    assert revoked == set(state.revoked)


def test_champion_is_production_or_what_the_candidate_replaced(tmp_path: Path) -> None:
    reg = LocalRegistry(tmp_path)
    assert reg.champion_for("sha256:a") is None
    for d in ("sha256:a", "sha256:b", "sha256:c"):
        reg.register(d, f"/m/{d[-1]}", {})
    reg.set_alias("production", "sha256:a", "first")
    assert reg.champion_for("sha256:b").digest == "sha256:a"  # type: ignore[union-attr]
    assert reg.champion_for("sha256:a") is None, "first production model replaced nothing"
    reg.set_alias("production", "sha256:b", "second")
    assert reg.champion_for("sha256:b").digest == "sha256:a"  # type: ignore[union-attr]
    assert reg.champion_for("sha256:c").digest == "sha256:b"  # type: ignore[union-attr]


def test_pointing_an_alias_where_it_already_points_is_not_history(tmp_path: Path) -> None:
    reg = LocalRegistry(tmp_path)
    reg.register("sha256:a", "/m/a", {})
    reg.set_alias("candidate", "sha256:a", "x")
    reg.set_alias("candidate", "sha256:a", "again")
    assert len(reg.history()) == 1


def test_record_release_promotes_atomically_against_the_expected_champion(tmp_path: Path) -> None:
    reg = LocalRegistry(tmp_path)
    assert reg.record_release("sha256:a", "/m/a", {}, {"gate": "g1"}, True, None) == ("promoted", None)
    assert reg.get("production").digest == reg.get("candidate").digest == "sha256:a"  # type: ignore[union-attr]
    assert reg.history()[-1].evidence == {"gate": "g1"}

    assert reg.record_release("sha256:b", "/m/b", {}, {}, False, "sha256:a") == ("kept", "sha256:a")
    assert reg.get("candidate").digest == "sha256:b"  # type: ignore[union-attr]
    assert reg.get("production").digest == "sha256:a"  # type: ignore[union-attr]

    before = (tmp_path / "state.json").read_text()
    with pytest.raises(StaleChampion):
        reg.record_release("sha256:c", "/m/c", {}, {}, True, "sha256:zzz")
    assert (tmp_path / "state.json").read_text() == before, "a stale decision writes nothing"

    assert reg.record_release("sha256:a", "/m/a", {}, {}, True, None) == ("kept", "sha256:a"), "already production"
