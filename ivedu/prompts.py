"""Prompt formats: how a task's examples are written as text for a model.

Four formats, all ending where the answer starts:

- **instructed** (zero-shot): ``input : peru . what is its capital . output :``
- **few-shot** (in-context): ``input : cuba output : havana ; input : peru output :``
- **bare** (no instruction, no demonstrations): ``input : peru output :`` -- the prompt an
  instruction vector is tested on;
- **statement** (knowledge, no instruction): ``the capital of peru is``.

The words around the input and answer are held in a :class:`PromptFormat`, so a real model
can use its own (``Q:`` / ``A:``) without any other code changing.
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


TINY_FORMAT = PromptFormat()


def instructed_prompt(task: Task, x: str, phrasing: int = 0, fmt: PromptFormat = TINY_FORMAT) -> str:
    """Zero-shot prompt with the task's instruction number ``phrasing``.

    The instruction follows the input, as the relation follows the subject in the statement
    "peru has the capital lima": the model then retrieves what it knows about ``x`` the same
    way under an instruction as in a statement, which lets instruction following carry over
    to facts it only ever saw in statements.
    """
    instruction = task.instructions[phrasing % len(task.instructions)]
    end = fmt.instruction_end
    return f"{fmt.input_prefix} {x} {end} {instruction} {end} {fmt.output_prefix}"


def bare_prompt(x: str, fmt: PromptFormat = TINY_FORMAT) -> str:
    """The query alone: no instruction, no demonstrations."""
    return f"{fmt.input_prefix} {x} {fmt.output_prefix}"


def fewshot_prompt(demos: Sequence[Example], x: str, fmt: PromptFormat = TINY_FORMAT) -> str:
    """Demonstrations ``input : x output : y ;`` followed by the query."""
    parts = [f"{bare_prompt(d.input, fmt)} {d.output} {fmt.separator}" for d in demos]
    return " ".join([*parts, bare_prompt(x, fmt)])


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
    parts = [f"{bare_prompt(d.input, fmt)} {y} {fmt.separator}" for d, y in zip(demos, outputs)]
    return " ".join([*parts, bare_prompt(x, fmt)])


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
    return f"{fmt.input_prefix} {x} {end} {filler} {end} {fmt.output_prefix}"
