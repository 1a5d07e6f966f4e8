"""Prompts: the format the model is fine-tuned on, and versioned prompt files rendered with Jinja2.

Two kinds of template live here on purpose:

- ``GROUNDED_QA`` is the *training format*: Axolotl's user-defined format (Python
  ``str.format`` fields) that fine-tuning and quantization calibrate with. It is a contract
  with Axolotl and changes only with the training code.
- ``PromptSpec`` is an *inference prompt*: a file under ``prompts/`` (name, description,
  declared variables, a Jinja2 template), versioned by its content digest, evaluated and
  released on its own (``flows/prompt_release.py``) like a model. The shipped
  ``prompts/grounded-qa.yaml`` renders exactly as the training format (a test holds them equal).

Rendering is strict: a template may use only the variables it declares, must use every one
it declares, and a declared variable missing at render time is an error naming it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lockgate._io import load_yaml
from lockgate.digest import digest_json, short
from lockgate.errors import ConfigError


@dataclass(frozen=True)
class PromptTemplate:
    """A question/context prompt in the shape Axolotl's user-defined format expects."""

    name: str
    with_context: str
    without_context: str

    @property
    def version(self) -> str:
        """``name@digest``: two templates with one name but other text get other versions."""
        return f"{self.name}@{short(digest_json([self.with_context, self.without_context]), 8)}"

    def render(self, question: str, context: str = "") -> str:
        """The prompt the model continues; the answer follows it directly."""
        if context:
            return self.with_context.format(instruction=question, input=context)
        return self.without_context.format(instruction=question)


GROUNDED_QA = PromptTemplate(
    name="grounded-qa",
    with_context="Context: {input}\nQuestion: {instruction}\nAnswer:",
    without_context="Question: {instruction}\nAnswer:",
)

# What evaluation and serving hand a prompt: the question, and the retrieved context ("" if none).
EVAL_VARIABLES = ("question", "context")
PROMPT_SUFFIXES = (".yaml", ".yml")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@lru_cache(maxsize=1)
def _environment() -> Any:
    # Sandboxed: a prompt file is data, and must not reach Python attributes through the template.
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    return SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


def template_variables(template: str) -> set[str]:
    """The variables a Jinja2 template reads.

    Raises:
        ValueError: the template does not parse (with the line Jinja2 names).
    """
    from jinja2 import TemplateSyntaxError, meta

    try:
        ast = _environment().parse(template)
    except TemplateSyntaxError as exc:
        raise ValueError(f"template line {exc.lineno}: {exc.message}") from None
    return set(meta.find_undeclared_variables(ast))


class PromptSpec(BaseModel):
    """One prompt file: ``prompts/<name>.yaml``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(
        pattern=r"^[a-z0-9][a-z0-9._-]*$", max_length=100, description="The prompt's name; equals the file's stem."
    )
    description: str = Field(min_length=1, max_length=2000, description="What the prompt is for, for people.")
    variables: tuple[str, ...] = Field(
        min_length=1, description="Every variable the template uses (evaluation supplies question and context)."
    )
    template: str = Field(min_length=1, max_length=20_000, description="A Jinja2 template.")

    @model_validator(mode="after")
    def _declared_is_used(self) -> PromptSpec:
        problems = [f"variable {v!r} is not a name" for v in self.variables if not _IDENTIFIER.match(v)]
        if len(set(self.variables)) != len(self.variables):
            problems.append("variables are listed twice")
        used = template_variables(self.template)
        undeclared = sorted(used - set(self.variables))
        unused = sorted(set(self.variables) - used)
        if undeclared:
            problems.append(f"template uses undeclared variable(s) {undeclared}")
        if unused:
            problems.append(f"variable(s) {unused} declared but not used by the template")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def digest(self) -> str:
        """The content digest: what renders (template and variables); the description does not."""
        return digest_json({"template": self.template, "variables": sorted(self.variables)})

    @property
    def version(self) -> str:
        """``name@<12 hex of the digest>``, as reports and decisions show it."""
        return f"{self.name}@{short(self.digest)}"

    def recipe(self) -> dict[str, Any]:
        """What a cache key needs of a prompt (see ``lockgate.fingerprint.canonical``): not its description."""
        return {"name": self.name, "digest": self.digest}

    def require(self, available: Iterable[str]) -> None:
        """Fail before any work when the caller cannot supply every variable this prompt needs.

        Raises:
            ConfigError: naming the missing variable(s).
        """
        missing = sorted(set(self.variables) - set(available))
        if missing:
            raise ConfigError(
                f"prompt {self.version}: variable(s) {missing} are needed but not supplied "
                f"(this caller supplies {sorted(set(available))})"
            )

    def render(self, values: Mapping[str, str]) -> str:
        """The text the model continues.

        Raises:
            ConfigError: a declared variable is missing from ``values`` (named), or the template fails.
        """
        self.require(values)
        from jinja2 import TemplateError

        try:
            return str(_environment().from_string(self.template).render({v: values[v] for v in self.variables}))
        except TemplateError as exc:
            raise ConfigError(f"prompt {self.version}: rendering failed: {exc}") from None


def parse_prompt(text: str, where: str) -> PromptSpec:
    """A prompt from YAML text; ``where`` names it in errors.

    Raises:
        ConfigError: one line naming ``where`` and every problem.
    """
    try:
        values = load_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: a prompt file must be a mapping, got {type(values).__name__}")
    try:
        return PromptSpec.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'prompt'}: {str(err['msg']).removeprefix('Value error, ')}"
            for err in exc.errors()
        )
        raise ConfigError(f"{where}: invalid prompt, {exc.error_count()} problem(s): {problems}") from None


def load_prompt(path: Path) -> PromptSpec:
    """Read and validate one prompt file; its ``name`` must equal the file's stem.

    Raises:
        ConfigError: the file is missing or invalid (one line naming the file).
    """
    if not path.is_file():
        raise ConfigError(f"prompt file {path} not found")
    spec = parse_prompt(path.read_text(encoding="utf-8"), str(path))
    if spec.name != path.stem:
        raise ConfigError(f"{path}: name {spec.name!r} differs from the file name {path.stem!r}")
    return spec


def prompt_files(folder: Path) -> list[Path]:
    """The prompt files of a folder, sorted."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in PROMPT_SUFFIXES)


def find_prompt(folder: Path, name: str) -> tuple[PromptSpec, Path]:
    """The prompt called ``name`` in ``folder`` and its file.

    Raises:
        ConfigError: no such file (listing the prompts there), or it is invalid.
    """
    for path in prompt_files(folder):
        if path.stem == name:
            return load_prompt(path), path
    known = [p.stem for p in prompt_files(folder)]
    raise ConfigError(f"prompts.name: no prompt {name!r} in {folder}; found {known}")


def find_prompt_version(folder: Path, digest: str) -> tuple[PromptSpec, Path]:
    """The prompt file in ``folder`` whose content digest is ``digest`` (as a data-change event names it).

    Raises:
        ConfigError: no valid prompt there has that digest.
    """
    for path in prompt_files(folder):
        try:
            spec = load_prompt(path)
        except ConfigError:
            continue
        if spec.digest == digest:
            return spec, path
    raise ConfigError(f"no prompt file in {folder} has version digest {digest} (it changed again since?)")
