"""A chat model's own template around Lockgate's prompt text, the same bytes everywhere.

A prompt file (``prompts/*.yaml``) renders the conversation's user turn: the question and its
retrieved context. A completion model (the builtin tiny Llama) continues that text as is; a
chat model (SmolLM2-Instruct) was trained on its chat template, so the turn is wrapped in it
before the model sees it. Training, quantization calibration, evaluation and the gateway all
call ``ChatFormat.wrap`` with the template read from the model's folder, so the three ways a
question reaches the model are one text (a test compares the bytes).

The template is rendered here, with Jinja2 set up as transformers sets it up for
``apply_chat_template`` (sandboxed, ``trim_blocks``, ``lstrip_blocks``, loop controls,
``raise_exception``), so the gateway needs no tokenizer to send the same text.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from lockgate.errors import ConfigError
from lockgate.prompts import PromptSpec

# Placeholders the Axolotl user-defined format fills (``str.format`` fields): kept through the
# template as sentinels, so braces the template itself writes are escaped and these are not.
_SENTINEL = "\x00lockgate-field-{}\x00"


@dataclass(frozen=True)
class ChatFormat:
    """How a model wants a rendered prompt: its chat template, or plain text (``template=None``)."""

    template: str | None = None
    bos_token: str = ""
    eos_token: str = ""

    @property
    def is_chat(self) -> bool:
        return self.template is not None

    def wrap(self, prompt_text: str) -> str:
        """The exact text the model continues for one user turn of ``prompt_text``."""
        if self.template is None:
            return prompt_text
        try:
            return str(
                _compiled(self.template).render(
                    messages=[{"role": "user", "content": prompt_text}],
                    add_generation_prompt=True,
                    bos_token=self.bos_token,
                    eos_token=self.eos_token,
                )
            )
        except Exception as exc:  # a template error is the model folder's, named once
            raise ConfigError(f"the model's chat template does not render a user turn: {exc}") from None

    def wrap_format(self, format_string: str, fields: tuple[str, ...] = ("instruction", "input")) -> str:
        """``wrap`` for a ``str.format`` string: its ``{field}`` placeholders survive, other braces are escaped."""
        if self.template is None:
            return format_string
        marked = format_string
        for name in fields:
            marked = marked.replace("{" + name + "}", _SENTINEL.format(name))
        wrapped = self.wrap(marked).replace("{", "{{").replace("}", "}}")
        for name in fields:
            wrapped = wrapped.replace(_SENTINEL.format(name), "{" + name + "}")
        return wrapped


PLAIN_TEXT = ChatFormat()
# Retrieved passages go into the prompt's ``context`` one after another, a blank line apart.
CONTEXT_SEPARATOR = "\n\n"


def join_contexts(contexts: Iterable[str]) -> str:
    """The ``context`` value of a prompt from retrieved passages, as evaluation and the gateway give it."""
    return CONTEXT_SEPARATOR.join(contexts)


def prompt_for_model(chat: ChatFormat, prompt: PromptSpec, question: str, contexts: Iterable[str]) -> str:
    """The text a model continues for a question and its retrieved passages: one function for
    evaluation and the gateway, so a model is scored on the text it will be served."""
    return chat.wrap(prompt.render({"question": question, "context": join_contexts(contexts)}))


def chat_format_of(folder: str | Path) -> ChatFormat:
    """The chat format of a model folder: its ``chat_template.jinja`` or tokenizer config's template.

    A hub id or a folder without a template is a plain-text model.
    """
    path = Path(folder)
    config_file = path / "tokenizer_config.json"
    config: dict[str, Any] = {}
    if config_file.is_file():
        config = json.loads(config_file.read_text(encoding="utf-8"))
    jinja = path / "chat_template.jinja"
    template = jinja.read_text(encoding="utf-8") if jinja.is_file() else config.get("chat_template")
    if not isinstance(template, str) or not template:
        return ChatFormat()
    return ChatFormat(template=template, bos_token=_token(config, "bos_token"), eos_token=_token(config, "eos_token"))


def _token(config: dict[str, Any], key: str) -> str:
    value = config.get(key)
    if isinstance(value, dict):  # older tokenizer configs store AddedToken dicts
        value = value.get("content")
    return value if isinstance(value, str) else ""


@lru_cache(maxsize=8)
def _compiled(template: str) -> Any:
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, **_: Any) -> str:
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)
