"""Prompt templates, versioned by content: training and inference must format alike."""

from __future__ import annotations

from dataclasses import dataclass

from lockgate.digest import digest_json, short


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
