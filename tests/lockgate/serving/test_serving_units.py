"""Routing, budgets, the rollback policy, manifests and keys, on tiny inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lockgate.errors import ConfigError, DataError, StageError
from lockgate.prompts import PromptSpec
from lockgate.registry import LocalRegistry, ModelVersion
from lockgate.registry.prompts import PromptRegistry
from lockgate.serving.canary import CanaryMonitor, RollbackPolicy, route
from lockgate.serving.deploy import engine_specs, servable_here
from lockgate.serving.keys import KeyStore, add_key, key_digest
from lockgate.serving.manifest import ServingManifest, Variant, load_manifest, write_manifest
from lockgate.serving.openai import BadRequest, parse_chat
from lockgate.serving.ratelimit import RateLimiter
from lockgate.serving.rollout import (
    PromptCanary,
    is_prompt_canary,
    plan_rollout,
    plan_variants,
    prompt_canary,
    roll_back_canary,
    variant_for,
)
from lockgate.serving.vllm import EngineSpec, vllm_command, weight_only_bits


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def variant(name: str, weight: float, digest: str = "") -> Variant:
    return Variant(
        name=name,  # type: ignore[arg-type]
        model_digest=digest or f"sha256:{name}",
        served_model=name,
        engine_url="http://127.0.0.1:1",
        model_path="/m",
        prompt_version="grounded-qa@x",
        weight=weight,
    )


def manifest(canary_weight: float) -> ServingManifest:
    variants = [variant("production", 1 - canary_weight)]
    if canary_weight:
        variants.append(variant("canary", canary_weight))
    return ServingManifest(variants=tuple(variants), max_model_len=256)


@pytest.mark.parametrize("weight", [0.05, 0.1, 0.3, 0.5])
def test_canary_split_is_within_three_points_and_sticky(weight: float) -> None:
    m = manifest(weight)
    subjects = [f"user-{i}" for i in range(2000)]
    first = [route(m, s).name for s in subjects]
    share = first.count("canary") / len(first)
    assert abs(share - weight) <= 0.03, share
    assert [route(m, s).name for s in subjects] == first  # sticky


def test_raising_the_canary_weight_only_adds_subjects() -> None:
    subjects = [f"k{i}" for i in range(2000)]
    small = {s for s in subjects if route(manifest(0.1), s).name == "canary"}
    large = {s for s in subjects if route(manifest(0.3), s).name == "canary"}
    assert small < large


def test_token_budget_admits_at_most_one_request_over_and_tells_when_to_retry() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    admitted = 0
    while limiter.admit("k", tokens_per_minute=100, requests_per_minute=1000).allowed:
        limiter.charge("k", 30)
        admitted += 1
    assert admitted == 4  # 0, 30, 60, 90 spent before each: the fourth overshoots, the fifth waits
    refused = limiter.admit("k", 100, 1000)
    assert refused.budget == "tokens per minute"
    # 120 spent of 100: 21 tokens to refill at 100/60 per second -> 12.6 s -> 13
    assert refused.retry_after_s == 13
    clock.now += refused.retry_after_s - 1
    assert not limiter.admit("k", 100, 1000).allowed
    clock.now += 1
    assert limiter.admit("k", 100, 1000).allowed


def test_request_budget_is_per_key() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    assert [limiter.admit("a", 10_000, 2).allowed for _ in range(3)] == [True, True, False]
    assert limiter.admit("b", 10_000, 2).allowed
    assert limiter.admit("a", 10_000, 2).retry_after_s == 30


def test_rollback_policy_error_rate_needs_enough_requests() -> None:
    clock = Clock()
    policy = RollbackPolicy(window_s=60, min_requests=10, max_error_rate=0.2, max_p95_ms=1000)
    monitor = CanaryMonitor(policy, clock)
    for _ in range(5):
        monitor.observe("c", False, 10)
    assert monitor.verdict("c") is None  # too few to judge
    for _ in range(5):
        monitor.observe("c", True, 10)
    assert "error rate 50.0%" in (monitor.verdict("c") or "")
    clock.now += 61  # the window moved past them
    assert monitor.verdict("c") is None


def test_rollback_policy_p95_latency() -> None:
    clock = Clock()
    monitor = CanaryMonitor(RollbackPolicy(60, 20, 0.5, max_p95_ms=500), clock)
    for i in range(20):
        monitor.observe("c", True, 100 if i < 18 else 5000)  # 2 slow in 20: the 95th percentile (nearest rank) is slow
    assert "p95 latency 5000 ms" in (monitor.verdict("c") or "")
    monitor.forget("c")
    for _ in range(20):
        monitor.observe("c", True, 100)
    assert monitor.verdict("c") is None


def test_manifest_rules_and_round_trip(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="add up"):
        ServingManifest(variants=(variant("production", 0.8),), max_model_len=256)
    with pytest.raises(ValueError, match="production"):
        ServingManifest(variants=(variant("canary", 1.0),), max_model_len=256)
    m = manifest(0.2)
    path = tmp_path / "manifest.json"
    write_manifest(path, m)
    assert load_manifest(path) == m
    assert m.without_canary("bad").variants[0].weight == 1.0
    path.write_text('{"variants": []}')
    with pytest.raises(ConfigError, match="not a valid serving manifest"):
        load_manifest(path)


def test_keys_are_stored_only_as_digests(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    key = add_key(path, "alice", 1000, 10)
    text = path.read_text()
    assert key not in text and key_digest(key) in text
    store = KeyStore.load(path)
    found = store.lookup(key)
    assert found is not None and found.name == "alice"
    assert store.lookup("lg-wrong") is None and store.lookup(None) is None
    new_key = add_key(path, "alice", 1000, 10)  # a new key replaces the old one
    assert KeyStore.load(path).lookup(key) is None and KeyStore.load(path).lookup(new_key) is not None
    path.write_text('{"keys": [{"name": "x", "sha256": "short"}]}')
    with pytest.raises(ConfigError, match=r"keys\.0"):
        KeyStore.load(path)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "JSON object"),
        ({"messages": []}, "non-empty list"),
        ({"messages": [{"role": "system", "content": "x"}]}, "last user message"),
        ({"messages": [{"role": "user", "content": "q"}], "max_tokens": 0}, "max_tokens"),
        ({"messages": [{"role": "user", "content": "q"}], "temperature": "hot"}, "temperature"),
        ({"messages": [{"role": "user", "content": "q"}], "stream": "yes"}, "stream"),
    ],
)
def test_chat_requests_are_checked(body: object, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse_chat(body, 16)


def version(digest: str, path: str) -> ModelVersion:
    return ModelVersion(digest=digest, path=path, lineage={}, registered_at="now")


def test_rollout_plan_canaries_a_new_model_beside_the_serving_one() -> None:
    new, old = version("sha256:new", "/n"), "sha256:old"
    live = ServingManifest(variants=(variant("production", 1.0, old),), max_model_len=256)
    assert plan_rollout(new, live, 0.1, lambda d: None) == (old, "canary")
    assert plan_rollout(new, live, 0.0, lambda d: None) == (None, "full")
    assert plan_rollout(new, None, 0.1, lambda d: None) == (None, "full")  # nothing serving yet
    assert plan_rollout(new, live, 0.1, lambda d: "rolled back") == (None, "full")  # never back to a revoked one
    serving_new = ServingManifest(variants=(variant("production", 1.0, "sha256:new"),), max_model_len=256)
    assert plan_rollout(new, serving_new, 0.1, lambda d: None) == (None, "unchanged")
    with pytest.raises(DataError, match="no model is in production"):
        plan_rollout(None, live, 0.1, lambda d: None)


def test_adapters_of_one_base_share_an_engine(tmp_path: Path) -> None:
    def adapter(name: str, base: str) -> str:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base}))
        return str(folder)

    versions = [
        version("sha256:a1", adapter("a1", "/base")),
        version("sha256:a2", adapter("a2", "/base")),
        version("sha256:full", str(tmp_path)),
    ]
    specs, placement = engine_specs(versions)
    assert len(specs) == 2
    shared = specs[placement["sha256:a1"][0]]
    assert shared.model_path == "/base" and [n for n, _ in shared.loras] == ["lockgate-a1", "lockgate-a2"]
    assert placement["sha256:a2"][0] == placement["sha256:a1"][0]
    assert specs[placement["sha256:full"][0]].loras == ()
    cmd = vllm_command("py", shared, 9000, 256, 8)
    assert cmd[cmd.index("--lora-modules") + 1 :] == [
        f"lockgate-a1={tmp_path / 'a1'}",
        f"lockgate-a2={tmp_path / 'a2'}",
    ]
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "adapter_config.json").write_text("{}")
    with pytest.raises(DataError, match="does not name its base model"):
        engine_specs([version("sha256:bad", str(tmp_path / "bad"))])


def test_chat_content_may_be_a_list_of_text_parts() -> None:
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]}
    assert parse_chat(body, 16).question == "a\nb"
    with pytest.raises(BadRequest):
        parse_chat({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, 16)


def prompt_registries(tmp_path: Path) -> tuple[LocalRegistry, ModelVersion, PromptRegistry, PromptSpec, PromptSpec]:
    """A model in production judged with prompt ``shipped``, and ``reworded`` promoted to the prompt canary (20%)."""
    shipped = PromptSpec(
        name="grounded-qa", description="d", variables=("question", "context"), template="{{ context }} {{ question }}"
    )
    reworded = shipped.model_copy(update={"template": "Context: {{ context }}\nQuestion: {{ question }}"})
    models = LocalRegistry(tmp_path / "registry")
    evidence = {"lineage": {"prompt_version": shipped.version}}
    assert models.record_release("sha256:m", "/m", {}, evidence, True, None)[0] == "promoted"
    production = models.get("production")
    assert production is not None
    prompts = PromptRegistry(tmp_path / "registry", "grounded-qa")
    assert prompts.serving(shipped) == shipped
    action, _ = prompts.release(reworded, {}, True, shipped.digest, to="canary", weight=0.2)
    assert action == "canary" and prompts.traffic() == {"canary": 0.2}
    return models, production, prompts, shipped, reworded


def test_a_prompt_canary_serves_the_production_model_with_the_canary_prompt(tmp_path: Path) -> None:
    models, production, prompts, shipped, reworded = prompt_registries(tmp_path)
    canary = prompt_canary(prompts)
    assert canary == PromptCanary(version=reworded.version, weight=0.2)
    planned = plan_variants(models, production, None, 0.0, "default@0", canary)
    assert [(p.name, p.version.digest, p.weight, p.prompt_version) for p in planned] == [
        ("production", "sha256:m", 0.8, shipped.version),
        ("canary", "sha256:m", 0.2, reworded.version),
    ]
    served = ServingManifest(
        variants=tuple(
            variant_for(p.version, p.name, p.weight, "http://127.0.0.1:1", None, None, p.prompt_version)
            for p in planned
        ),
        max_model_len=256,
    )
    assert served.canary is not None and served.canary.weight == 0.2 and is_prompt_canary(served)
    assert served.canary.served_model == served.production.served_model, "one engine serves both"

    # A model canary in progress keeps its split: each model with the prompt it was judged with.
    stable = version("sha256:old", "/o")
    with_model_canary = plan_variants(models, production, stable, 0.1, "default@0", canary)
    assert [(p.name, p.version.digest, p.weight) for p in with_model_canary] == [
        ("production", "sha256:old", 0.9),
        ("canary", "sha256:m", 0.1),
    ]
    assert {p.prompt_version for p in with_model_canary} == {"default@0", shipped.version}

    prompts.set_alias("canary", shipped.digest, reason="canary done")  # canary equal to production: no split
    assert prompt_canary(prompts) is None
    assert [p.name for p in plan_variants(models, production, None, 0.0, "default@0", None)] == ["production"]


def test_rolling_back_a_prompt_canary_moves_the_prompt_not_the_model(tmp_path: Path) -> None:
    models, production, prompts, shipped, reworded = prompt_registries(tmp_path)
    planned = plan_variants(models, production, None, 0.0, "default@0", prompt_canary(prompts))
    served = ServingManifest(
        variants=tuple(
            variant_for(p.version, p.name, p.weight, "http://127.0.0.1:1", None, None, p.prompt_version)
            for p in planned
        ),
        max_model_len=256,
    )
    events: list[tuple[str, dict[str, str], dict[str, object]]] = []
    after = roll_back_canary(served, models, lambda *e: events.append(e), "error rate 30%", prompts)
    assert after.canary is None and after.production.prompt_version == shipped.version
    assert models.get("production") == production and models.revoked_reason("sha256:m") is None
    assert prompts.traffic() == {} and prompts.production() == shipped
    ((_, _, payload),) = events
    assert payload["prompt"] == reworded.version and payload["aliases_moved"] == ["prompt grounded-qa canary"]


def test_a_prompt_promoted_to_production_is_what_production_serves(tmp_path: Path) -> None:
    models, production, prompts, shipped, reworded = prompt_registries(tmp_path)
    action, _ = prompts.release(reworded, {}, True, prompts.spec("production").digest, to="production")
    assert action == "promoted" and prompts.spec("production").version == reworded.version
    planned = plan_variants(models, production, None, 0.0, "default@0", None, prompts.spec("production").version)
    assert [(p.name, p.version.digest, p.weight, p.prompt_version) for p in planned] == [
        ("production", "sha256:m", 1.0, reworded.version)
    ], "a prompt-only release reaches serving with the model it was gated with"
    before = plan_variants(models, production, None, 0.0, "default@0", None, None)
    assert before[0].prompt_version == shipped.version, "without one: the prompt the model was promoted with"


def test_a_second_deploy_waits_for_the_first_and_gives_up_naming_the_lock(tmp_path: Path) -> None:
    import threading

    from lockgate.errors import StageError
    from lockgate.serving.deploy import deploy_lock

    order: list[str] = []
    held, release = threading.Event(), threading.Event()

    def first() -> None:
        with deploy_lock(tmp_path, wait_s=5):
            held.set()
            release.wait(5)
            order.append("first done")

    thread = threading.Thread(target=first)
    thread.start()
    held.wait(5)
    giving_up = pytest.raises(StageError, match=r"another deploy still holds .*deploy\.lock after 0\.2s")
    with giving_up, deploy_lock(tmp_path, wait_s=0.2, poll_s=0.05):
        order.append("overtook")
    threading.Timer(0.3, release.set).start()
    with deploy_lock(tmp_path, wait_s=5, poll_s=0.05):
        order.append("second")
    thread.join(5)
    assert order == ["first done", "second"]


def test_a_prompt_version_whose_file_changed_is_still_served_from_the_registry(tmp_path: Path) -> None:
    from lockgate.errors import ConfigError
    from lockgate.prompts import load_prompt
    from lockgate.serving.retrieval import PromptBook

    folder = tmp_path / "prompts"
    folder.mkdir()
    file = folder / "grounded-qa.yaml"
    file.write_text(
        "name: grounded-qa\ndescription: d\nvariables: [question, context]\n"
        "template: 'C: {{ context }} Q: {{ question }} A:'\n"
    )
    shipped = load_prompt(file)
    PromptRegistry(tmp_path / "registry", "grounded-qa").add(shipped)
    file.write_text(file.read_text().replace("A:", "Answer:"))  # edited after it was registered
    assert load_prompt(file).version != shipped.version
    book = PromptBook(folder, tmp_path / "registry")
    assert book.render(shipped.version, "why?", "because") == "C: because Q: why? A:"
    with pytest.raises(ConfigError, match="nor registered in the prompt registry"):
        PromptBook(folder).render(shipped.version, "why?", "because")
    with pytest.raises(ConfigError, match="grounded-qa@000000000000"):
        book.render("grounded-qa@000000000000", "why?", "because")


def quantized_folder(stored: Path, weights: dict[str, object], activations: dict[str, object] | None) -> Path:
    """A quantized model's folder as the quantize stage stores it: ``model/`` (compressed-tensors
    config) beside ``merged/`` and the stage's record."""
    group = {"weights": weights, "input_activations": activations, "targets": ["Linear"]}
    config = {"quantization_config": {"quant_method": "compressed-tensors", "config_groups": {"group_0": group}}}
    (stored / "model").mkdir(parents=True)
    (stored / "model" / "config.json").write_text(json.dumps(config))
    (stored / "merged").mkdir()
    (stored / "merged" / "config.json").write_text("{}")
    (stored / "lockgate-quantized.json").write_text("{}")
    return stored / "model"


def test_weight_only_bits_reads_the_scheme_from_the_checkpoint(tmp_path: Path) -> None:
    w4a16 = quantized_folder(tmp_path / "w4a16", {"num_bits": 4, "type": "int"}, None)
    w8a8 = quantized_folder(tmp_path / "w8a8", {"num_bits": 8, "type": "int"}, {"num_bits": 8, "type": "int"})
    assert weight_only_bits(str(w4a16)) == 4
    assert weight_only_bits(str(w8a8)) is None  # activations quantized too: another kernel
    assert weight_only_bits(str(tmp_path / "w4a16" / "merged")) is None
    assert weight_only_bits("HuggingFaceTB/SmolLM2-135M-Instruct") is None  # a hub id, not a folder here


def test_a_4bit_model_this_cpu_cannot_run_is_served_from_the_merged_model_beside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """vLLM's CPU build runs 4-bit weights only with AVX-512: on a CPU without it (injected here; the
    real probe runs in tests/lockgate/serving/test_quantized_serving.py) the deploy serves the merged
    model, says so, and refuses where there is none."""
    import lockgate.serving.vllm as vllm

    w4a16 = quantized_folder(tmp_path / "stored", {"num_bits": 4, "type": "int"}, None)
    spec = EngineSpec(str(w4a16), "lockgate-abc")
    monkeypatch.setattr(vllm, "runs_4bit_weights", lambda python: True)
    assert servable_here(spec, "py") == spec
    monkeypatch.setattr(vllm, "runs_4bit_weights", lambda python: False)
    with caplog.at_level("WARNING", logger="lockgate.serving.deploy"):
        served = servable_here(spec, "py")
    assert served == EngineSpec(str(tmp_path / "stored" / "merged"), "lockgate-abc")
    assert "AVX-512" in caplog.text and "merged" in caplog.text
    plain = EngineSpec(str(tmp_path / "stored" / "merged"), "lockgate-def")
    assert servable_here(plain, "py") == plain  # not 4-bit: nothing to ask
    (tmp_path / "stored" / "merged" / "config.json").unlink()
    with pytest.raises(StageError, match=r"cannot be served on this machine.*quantization\.scheme W8A8"):
        servable_here(spec, "py")
