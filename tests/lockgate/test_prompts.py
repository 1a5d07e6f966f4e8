"""Prompt files: validated as a whole, rendered strictly, versioned by what renders."""

from __future__ import annotations

from pathlib import Path

import pytest

from lockgate.errors import ConfigError
from lockgate.prompts import (
    EVAL_VARIABLES,
    GROUNDED_QA,
    PromptSpec,
    find_prompt,
    find_prompt_version,
    load_prompt,
    prompt_files,
)
from tests.conftest import ROOT

GOOD = """\
name: short-qa
description: A terse prompt.
variables: [question, context]
template: "{{ context }}\\nQ: {{ question }}\\nA:"
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("path", prompt_files(ROOT / "prompts"), ids=lambda p: p.name)
def test_every_shipped_prompt_loads_and_renders_with_what_evaluation_supplies(path: Path) -> None:
    spec = load_prompt(path)
    spec.require(EVAL_VARIABLES)
    assert spec.render({"question": "Q?", "context": "C."})


def test_the_shipped_prompt_renders_exactly_as_the_model_is_trained() -> None:
    spec = load_prompt(ROOT / "prompts" / "grounded-qa.yaml")
    for context in ("The Relay is maintained by the Fleet team.", ""):
        question = "Which team maintains the Relay?"
        assert spec.render({"question": question, "context": context}) == GROUNDED_QA.render(question, context)


def test_version_is_the_content_of_what_renders(tmp_path: Path) -> None:
    spec = load_prompt(write(tmp_path, "short-qa", GOOD))
    assert spec.version.startswith("short-qa@") and spec.digest.startswith("sha256:")
    assert spec.model_copy(update={"description": "other words"}).digest == spec.digest
    reworded = PromptSpec.model_validate({**spec.model_dump(), "template": "{{ context }} Q: {{ question }} A:"})
    assert reworded.digest != spec.digest


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD.replace("{{ context }}", "{{ persona }} {{ context }}"), "undeclared variable(s) ['persona']"),
        (GOOD.replace("[question, context]", "[question, context, tone]"), "['tone'] declared but not used"),
        (GOOD.replace("{{ question }}", "{{ question }"), "template line 2: unexpected"),
        (GOOD.replace("template:", "templte:"), "templte: Extra inputs are not permitted"),
        (GOOD.replace("description: A terse prompt.\n", ""), "description: Field required"),
        (GOOD.replace("[question, context]", "[question, 2x]"), "variable '2x' is not a name"),
        ("- just\n- a list\n", "a prompt file must be a mapping"),
        ("name: [unclosed\n", "not valid YAML"),
    ],
)
def test_a_bad_prompt_file_is_one_line_naming_the_file_and_the_problem(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, "short-qa", text)
    with pytest.raises(ConfigError) as err:
        load_prompt(path)
    message = str(err.value)
    assert str(path) in message and expected in message and "\n" not in message, message


def test_file_name_and_prompt_name_must_agree(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="differs from the file name 'other'"):
        load_prompt(write(tmp_path, "other", GOOD))


def test_rendering_with_a_missing_variable_names_it(tmp_path: Path) -> None:
    spec = load_prompt(write(tmp_path, "short-qa", GOOD))
    with pytest.raises(ConfigError, match=r"\['context'\] are needed but not supplied"):
        spec.render({"question": "Q?"})
    assert spec.render({"question": "Q?", "context": "C.", "unused": "x"}) == "C.\nQ: Q?\nA:"


def test_a_template_cannot_reach_python_internals(tmp_path: Path) -> None:
    text = GOOD.replace("{{ context }}", "{{ context.__class__.__mro__ }}")
    spec = load_prompt(write(tmp_path, "short-qa", text))
    with pytest.raises(ConfigError, match="rendering failed"):
        spec.render({"question": "Q?", "context": "C."})


def test_a_prompt_evaluation_cannot_fill_fails_before_any_model_loads(tmp_path: Path) -> None:
    from lockgate.evaluate import generate_answers

    text = GOOD.replace("{{ context }}", "{{ persona }} {{ context }}").replace("[question,", "[persona, question,")
    spec = load_prompt(write(tmp_path, "short-qa", text))
    # The model path does not exist: reaching the loader would fail differently.
    with pytest.raises(ConfigError, match=r"\['persona'\] are needed"):
        generate_answers(str(tmp_path / "no-such-model"), [], 8, spec)


def test_finding_prompts_by_name_and_by_version(tmp_path: Path) -> None:
    path = write(tmp_path, "short-qa", GOOD)
    write(tmp_path, "broken", "name: [\n")
    spec, found = find_prompt(tmp_path, "short-qa")
    assert found == path
    assert find_prompt_version(tmp_path, spec.digest) == (spec, path), "a broken neighbour is skipped"
    with pytest.raises(ConfigError, match="no prompt 'nope'"):
        find_prompt(tmp_path, "nope")
    with pytest.raises(ConfigError, match="has version digest"):
        find_prompt_version(tmp_path, "sha256:" + "0" * 64)
