"""``lockgate verify``: an alias, a digest or a folder checked against its signature; 0 / 1 / 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.cli import EXIT_BAD_INPUT, EXIT_FAILED, main
from lockgate.artifacts import LocalArtifactStore
from lockgate.digest import digest_json, short
from lockgate.gates import DECISION_FILE, commit_decision
from lockgate.records import GateCheck, GateDecision, ReleaseLineage
from lockgate.registry import LocalRegistry
from lockgate.settings import SigningSettings
from lockgate.signing import open_signing
from tests.lockgate.signing.conftest import signing_env, signing_settings  # noqa: F401  (fixtures)

BASE = {"config.json": b'{"model_type": "llama"}', "model.safetensors": b"\x01" * 300, "tokenizer.json": b"{}"}


def commit(store: LocalArtifactStore, kind: str, files: dict[str, bytes]) -> Path:
    staged = store.staging(kind)
    for name, data in files.items():
        (staged / name).write_bytes(data)
    return store.commit(kind, staged)[1]


@pytest.fixture
def home(tmp_path: Path, signing_env: SigningSettings) -> tuple[Path, Path, Path]:  # noqa: F811
    """A state folder whose production model is a signed adapter over a signed base model."""
    home = tmp_path / "home"
    store = LocalArtifactStore(home / "artifacts", open_signing(signing_env))
    base = commit(store, "base-models", BASE)
    adapter = commit(
        store,
        "adapters",
        {"adapter_config.json": f'{{"base_model_name_or_path": "{base}"}}'.encode(), "adapter.safetensors": b"\x02"},
    )
    registry = LocalRegistry(home / "registry")
    registry.register("sha256:" + adapter.name + "0" * 48, str(adapter), {})
    registry.set_alias("production", "sha256:" + adapter.name + "0" * 48, "gate passed")
    return home, base, adapter


def test_verify_production_checks_the_adapter_and_its_base(
    home: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    state, base, adapter = home
    assert main(["--home", str(state), "verify"]) == 0
    out = capsys.readouterr().out
    assert f"ok  adapters/{adapter.name}: 2 files match" in out and f"ok  base-models/{base.name}: 3 files" in out
    assert main(["--home", str(state), "verify", adapter.name[:10]]) == 0
    assert main(["--home", str(state), "verify", str(base)]) == 0


def test_a_deleted_tokenizer_file_is_exit_1_naming_artifact_and_file(
    home: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    state, base, _ = home
    (base / "tokenizer.json").unlink()
    assert main(["--home", str(state), "verify", "production"]) == EXIT_FAILED
    err = capsys.readouterr().err.strip()
    assert err == f"error: artifact base-models/{base.name} refused: tokenizer.json is missing (it was signed)"


@pytest.mark.parametrize("ref", ["canary", "deadbeefdeadbeef", "no/such/folder"])
def test_a_ref_naming_nothing_is_exit_2(
    home: tuple[Path, Path, Path], ref: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--home", str(home[0]), "verify", ref]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: verify: ") and "\n" not in err


def gate_decision(model: str, passed: bool = True) -> GateDecision:
    lineage = ReleaseLineage(candidate=model, champion=None, dataset="d", index=None, prompt_version=None)
    check = GateCheck(name="quality", passed=passed, detail="rouge_l 0.9 >= 0.5" if passed else "rouge_l too low")
    return GateDecision(
        digest=digest_json({"model": model, "passed": passed}),
        passed=passed,
        reasons=("all checks passed",) if passed else ("rouge_l too low",),
        checks=(check,),
        metrics={"rouge_l": 0.9},
        baseline={},
        candidate_digest=model,
        policy_digest="sha256:" + "ab" * 32,
        lineage=lineage,
    )


def promoted_with(state: Path, decision: GateDecision, signing_env: SigningSettings) -> Path:  # noqa: F811
    """Record ``decision`` as production's promotion evidence, committed (and signed) as a release does."""
    registry = LocalRegistry(state / "registry")
    production = registry.get("production")
    assert production is not None
    folder = commit_decision(decision, LocalArtifactStore(state / "artifacts", open_signing(signing_env)))
    evidence = {"decision": {"path": str(folder), "digest": decision.digest}}
    registry.record_release(production.digest, production.path, {}, evidence, False, None)
    return folder


def test_verify_checks_the_gate_decision_production_was_promoted_on(
    home: tuple[Path, Path, Path],
    signing_env: SigningSettings,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    state = home[0]
    assert main(["--home", str(state), "verify"]) == 0
    assert "no gate decision recorded" in capsys.readouterr().out, "a model registered by hand says so"

    model = LocalRegistry(state / "registry").get("production").digest  # type: ignore[union-attr]
    folder = promoted_with(state, gate_decision(model), signing_env)
    assert main(["--home", str(state), "verify"]) == 0
    out = capsys.readouterr().out
    assert f"ok  decisions/{folder.name}: the gate passed {short(model)} under policy" in out

    kept = (folder / DECISION_FILE).read_text(encoding="utf-8")
    assert '"rouge_l": 0.9' in kept
    (folder / DECISION_FILE).write_text(kept.replace('"rouge_l": 0.9', '"rouge_l": 0.99'), encoding="utf-8")
    assert main(["--home", str(state), "verify"]) == EXIT_FAILED
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: artifact decisions/{folder.name} refused: decision.json"), err


@pytest.mark.parametrize("about_this_model, passed", [(False, True), (True, False)])
def test_a_signed_decision_about_another_model_or_a_rejection_is_exit_1(
    home: tuple[Path, Path, Path],
    signing_env: SigningSettings,  # noqa: F811
    about_this_model: bool,
    passed: bool,
    capsys: pytest.CaptureFixture[str],
) -> None:
    state = home[0]
    model = LocalRegistry(state / "registry").get("production").digest  # type: ignore[union-attr]
    promoted_with(state, gate_decision(model if about_this_model else "sha256:" + "cd" * 32, passed), signing_env)
    assert main(["--home", str(state), "verify"]) == EXIT_FAILED
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: gate decision ") and "\n" not in err
    assert ("rejected" in err) if about_this_model else (f"not {short(model)}" in err), err
