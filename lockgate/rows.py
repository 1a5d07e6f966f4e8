"""The record shapes teams train on, as pydantic models, and the one row Lockgate writes for each.

- ``qa``: ``instruction``, ``output``, optional ``context`` and ``source_doc`` (retrieval QA).
- ``alpaca``: ``instruction``, optional ``input``, ``output``.
- ``chat``: ``messages``, a list of ``{role, content}`` ending with the assistant's turn.

Every written row also carries ``instruction``, ``context`` and ``output`` (for chat: the last
user turn, the system prompt and the last assistant turn), so evaluation, drift and
quantization read every shape the same way; the shape's own fields are what training uses.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Shape = Literal["qa", "alpaca", "chat"]
SHAPES: tuple[Shape, ...] = ("qa", "alpaca", "chat")
# Keys that give a record's shape away; rows with none of them fit qa and alpaca alike.
_TELLING_KEYS: tuple[tuple[str, Shape], ...] = (("messages", "chat"), ("input", "alpaca"), ("context", "qa"))


_BLANKS = re.compile(r"[^\S\n]+")  # white space other than a line break
_LINE_END = re.compile(r" +\n")


def clean_text(text: str) -> str:
    """Unicode NFC, no control characters, line breaks kept (Windows and old Mac line ends
    become one newline), other runs of white space folded to one space, no spaces at line ends."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    # Every control, format, surrogate, private or unassigned character is unprintable, so
    # printable text (line breaks and tabs aside) has none to drop: the common case, checked in C.
    if not text.replace("\n", "").replace("\t", "").isprintable():
        text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch)[0] != "C")
    elif "\t" not in text and "  " not in text and " \n" not in text:
        # Printable, so its only white space is spaces and line breaks: none to fold.
        return text.strip()
    return _LINE_END.sub("\n", _BLANKS.sub(" ", text)).strip()


class _Row(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


def _optional_text(value: Any) -> Any:
    return "" if value is None else value


class QARow(_Row):
    """Retrieval QA: a question, the passage it is answered from, and the answer."""

    instruction: str
    output: str
    context: str = ""
    source_doc: str = ""

    _none_is_empty = field_validator("context", "source_doc", mode="before")(_optional_text)


class AlpacaRow(_Row):
    """Alpaca: an instruction, its optional input, and the output."""

    instruction: str
    input: str = ""
    output: str

    _none_is_empty = field_validator("input", mode="before")(_optional_text)


class ChatMessage(_Row):
    """One turn of a conversation."""

    role: Literal["system", "user", "assistant"]
    content: str


class ChatRow(_Row):
    """A conversation: optional system prompt, then user and assistant turns, ending with the assistant."""

    messages: list[ChatMessage] = Field(min_length=2)

    @model_validator(mode="after")
    def _ends_with_an_answer(self) -> ChatRow:
        roles = [m.role for m in self.messages]
        if "user" not in roles:
            raise ValueError("a conversation needs a user turn")
        if roles[-1] != "assistant":
            raise ValueError("the last turn must be the assistant's")
        return self


MODELS: dict[Shape, type[_Row]] = {"qa": QARow, "alpaca": AlpacaRow, "chat": ChatRow}


def telling_shape(value: dict[str, Any]) -> Shape | None:
    """The shape a record's keys give away, or None when it fits more than one."""
    for key, shape in _TELLING_KEYS:
        if key in value:
            return shape
    return None


class RowError(Exception):
    """A record that does not fit its shape: which field and why."""

    def __init__(self, field: str | None, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


def parse_row(value: dict[str, Any], shape: Shape, min_chars: int, max_chars: int) -> dict[str, Any]:
    """Validate one record against its shape and return the cleaned row Lockgate writes.

    Raises:
        RowError: naming the first bad field.
    """
    try:
        model = MODELS[shape].model_validate(value)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or None
        reason = "missing required field" if err["type"] == "missing" else err["msg"]
        if err["type"] == "string_type":
            reason = f"expected a string, got {type(_at(value, err['loc'])).__name__}"
        raise RowError(loc, reason) from None

    def text(name: str, raw: str, required: bool) -> str:
        cleaned = clean_text(raw)
        if required and len(cleaned) < min_chars:
            raise RowError(name, f"shorter than {min_chars} characters")
        if len(cleaned) > max_chars:
            raise RowError(name, f"longer than {max_chars} characters")
        return cleaned

    if isinstance(model, QARow):
        return {
            "instruction": text("instruction", model.instruction, True),
            "context": text("context", model.context, False),
            "output": text("output", model.output, True),
            "source_doc": text("source_doc", model.source_doc, False),
        }
    if isinstance(model, AlpacaRow):
        given = text("input", model.input, False)
        return {
            "instruction": text("instruction", model.instruction, True),
            "input": given,
            "context": given,
            "output": text("output", model.output, True),
        }
    assert isinstance(model, ChatRow)
    messages = [
        {"role": m.role, "content": text(f"messages.{i}.content", m.content, m.role != "system")}
        for i, m in enumerate(model.messages)
    ]
    return chat_row(messages)


def chat_row(messages: list[dict[str, str]]) -> dict[str, Any]:
    """The row written for a conversation: its turns, plus the last user turn as ``instruction``,
    the system prompt as ``context`` and the last (assistant) turn as ``output``."""
    return {
        "messages": messages,
        "instruction": next(m["content"] for m in reversed(messages) if m["role"] == "user"),
        "context": next((m["content"] for m in messages if m["role"] == "system"), ""),
        "output": messages[-1]["content"],
    }


def _at(value: Any, loc: tuple[Any, ...]) -> Any:
    for part in loc:
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            return None
    return value


def dedupe_text(row: dict[str, Any]) -> str:
    """What near-duplicate detection compares: everything the model is trained on."""
    if "messages" in row:
        return "\n".join(m["content"] for m in row["messages"])
    return "\n".join([row["instruction"], row.get("context", ""), row["output"]])


def question_text(row: dict[str, Any]) -> str:
    """What leakage detection compares: the question asked (not the retrieved passage)."""
    if "messages" in row:
        return "\n".join(m["content"] for m in row["messages"] if m["role"] == "user")
    return "\n".join([row["instruction"], row.get("input", "")]).strip()
