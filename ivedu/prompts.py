"""Prompt formats: how a task's examples are written as text for a model.

Four formats, all ending where the answer starts:

- **instructed** (zero-shot): ``input : peru . what is its capital . output :``
- **few-shot** (in-context): ``input : cuba output : havana ; input : peru output :``
- **bare** (no instruction, no demonstrations): ``input : peru output :`` -- the prompt an
  instruction vector is tested on;
- **statement** (knowledge, no instruction): ``the capital of peru is``.

The words around the input and answer are held in a :class:`PromptFormat`, so a real model
can use its own (``Q:`` / ``A:``, :data:`QA_FORMAT`) without any other code changing. A chat
model's prompts are further wrapped in its chat template by a :class:`ChatFormat`
(:func:`chat_format` builds one from the tokenizer): the prompt's text becomes the user's
message, and the assistant's turn opens with the output prefix, so that answers still
follow the prompt after a space, as every scorer in ivedu expects.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

from ivedu.world import Example, Task


@dataclass(frozen=True)
class PromptFormat:
    """The fixed words of a prompt. ``separator`` ends an answer before the next demonstration."""

    input_prefix: str = "input :"
    output_prefix: str = "output :"
    separator: str = ";"
    instruction_end: str = "."

    def words(self) -> set[str]:
        """Every word the format itself adds to a prompt (a word-level tokenizer needs them)."""
        return {w for part in (self.input_prefix, self.output_prefix, self.separator, self.instruction_end)
                for w in part.split()}

    def wrap(self, prompt: str) -> str:
        """The finished prompt; a plain format leaves it as it is (see :class:`ChatFormat`)."""
        return prompt


TINY_FORMAT = PromptFormat()
# Todd et al.'s plain format for real models: "Q: x" then "A: y", one line each.
QA_FORMAT = PromptFormat(input_prefix="Q:", output_prefix="A:", separator="\n", instruction_end="\n")


@dataclass(frozen=True)
class ChatFormat(PromptFormat):
    """A :class:`PromptFormat` whose finished prompts sit in a chat model's template.

    ``before`` and ``after`` are the template's text around one user message, ``after``
    ending where the assistant's reply starts. A prompt ``... A:`` becomes
    ``before + "..." + after + "A:"``: the instruction and input are the user's message,
    and the assistant's turn begins with the output prefix, so the answer follows it after a
    space exactly as in the plain format. Only whole prompts are wrapped; demonstrations
    inside a few-shot prompt stay in the one user message.
    """

    before: str = ""
    after: str = ""

    def wrap(self, prompt: str) -> str:
        body = prompt.rstrip()
        if body.endswith(self.output_prefix):
            body = body[: len(body) - len(self.output_prefix)].rstrip()
        return f"{self.before}{body}{self.after}{self.output_prefix}"


_USER_SLOT = "\u2063IVEDU_USER_MESSAGE\u2063"  # a marker no template contains


def chat_format(tokenizer, base: PromptFormat = QA_FORMAT, system: str | None = None) -> PromptFormat:
    """``base`` wrapped in ``tokenizer``'s chat template, or ``base`` itself when it has none.

    The template is rendered once around a marker user message (with ``system`` as the
    system message when given) and split there. When the tokenizer adds its BOS token on
    every encode (Llama-2), a BOS written by the template is dropped, so prompts do not
    start with two.
    """
    if not getattr(tokenizer, "chat_template", None):
        return base
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": _USER_SLOT}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if text.count(_USER_SLOT) != 1:
        raise ValueError("the tokenizer's chat template does not write the user message exactly once; "
                         "pass the plain format (QA_FORMAT) instead of a chat format")
    before, after = text.split(_USER_SLOT)
    bos = tokenizer.bos_token
    if bos and before.startswith(bos) and tokenizer.encode("a")[:1] == [tokenizer.bos_token_id]:
        before = before[len(bos):]
    return ChatFormat(base.input_prefix, base.output_prefix, base.separator, base.instruction_end,
                      before=before, after=after)


def instructed_prompt(task: Task, x: str, phrasing: int = 0, fmt: PromptFormat = TINY_FORMAT) -> str:
    """Zero-shot prompt with the task's instruction number ``phrasing``.

    The instruction follows the input, as the relation follows the subject in the statement
    "peru has the capital lima": the model then retrieves what it knows about ``x`` the same
    way under an instruction as in a statement, which lets instruction following carry over
    to facts it only ever saw in statements.
    """
    instruction = task.instructions[phrasing % len(task.instructions)]
    end = fmt.instruction_end
    return fmt.wrap(f"{fmt.input_prefix} {x} {end} {instruction} {end} {fmt.output_prefix}")


def _query(x: str, fmt: PromptFormat) -> str:
    """``input : x output :``, unwrapped (a piece of a larger prompt)."""
    return f"{fmt.input_prefix} {x} {fmt.output_prefix}"


def bare_prompt(x: str, fmt: PromptFormat = TINY_FORMAT) -> str:
    """The query alone: no instruction, no demonstrations."""
    return fmt.wrap(_query(x, fmt))


def fewshot_prompt(demos: Sequence[Example], x: str, fmt: PromptFormat = TINY_FORMAT) -> str:
    """Demonstrations ``input : x output : y ;`` followed by the query."""
    parts = [f"{_query(d.input, fmt)} {d.output} {fmt.separator}" for d in demos]
    return fmt.wrap(" ".join([*parts, _query(x, fmt)]))


def statement_prompt(task: Task, x: str, template: int = 0) -> str:
    """The task's plain statement up to the answer: ``the capital of peru is``."""
    return task.statement_prefix(x, template)


def shuffled_fewshot_prompt(demos: Sequence[Example], x: str, rng: random.Random,
                            fmt: PromptFormat = TINY_FORMAT) -> str:
    """Few-shot prompt whose demonstration answers are shuffled among the demonstrations.

    Todd et al.'s corrupted prompt: the format and the answer space are kept, but the
    input-output pairing that defines the task is broken.
    """
    outputs = [d.output for d in demos]
    rng.shuffle(outputs)
    parts = [f"{_query(d.input, fmt)} {y} {fmt.separator}" for d, y in zip(demos, outputs)]
    return fmt.wrap(" ".join([*parts, _query(x, fmt)]))


def neutral_words(tasks: Sequence[Task], min_tasks: int = 3) -> list[str]:
    """Words that occur in the instructions of at least ``min_tasks`` tasks: they name no task."""
    counts: dict[str, int] = {}
    for task in tasks:
        for word in {w for instruction in task.instructions for w in instruction.split()}:
            counts[word] = counts.get(word, 0) + 1
    return sorted(w for w, n in counts.items() if n >= min_tasks)


def neutral_prompt(x: str, words: Sequence[str], rng: random.Random, length: int = 3,
                   fmt: PromptFormat = TINY_FORMAT) -> str:
    """The instructed format with the instruction replaced by ``length`` random neutral words.

    A corruption that keeps the prompt's shape and length but carries no task.
    """
    if not words:
        raise ValueError("no neutral words given: see neutral_words(tasks)")
    filler = " ".join(rng.choice(list(words)) for _ in range(length))
    end = fmt.instruction_end
    return fmt.wrap(f"{fmt.input_prefix} {x} {end} {filler} {end} {fmt.output_prefix}")
