"""Prompt formats: how a task's examples are written as text for a model.

Four kinds of prompt, all ending where the answer starts:

- **instructed** (zero-shot): ``input : peru . what is its capital . output :``
- **few-shot** (in-context): ``input : cuba output : havana ; input : peru output :``
- **bare** (no instruction, no demonstrations): ``input : peru output :`` -- the prompt an
  instruction vector is tested on;
- **statement** (knowledge, no instruction): ``the capital of peru is``.

A :class:`PromptFormat` writes the first three as plain text (the tiny model's format above;
Todd et al.'s ``Q:``/``A:`` lines with :data:`QA_FORMAT`). A chat model is prompted through its
own chat template instead (:class:`ChatFormat`, built by :func:`chat_format` from the
tokenizer): the instruction first, then an answer-length constraint, then the input, as the
user's message, and the assistant's turn left open, as the model met instructions in its own
instruction tuning. Statements stay plain text in every format: they probe what the model
knows with no instruction at all.

An answer's tokens are what follows its prompt in the model's own tokenizer (:func:`answer_ids`):
the answer is written after the prompt by :func:`join_answer` and the prompt's tokens are cut off
the joint encoding, so no format has to promise a leading space. Encoding the answer on its own
(``" " + answer``) is right only for a word-level tokenizer: a byte-level BPE marks a leading
space inside the word (``Ġparis``), SentencePiece may make ``▁`` a token of its own, and after a
chat template's ``<|im_start|>assistant\\n`` there is no space at all. Every scorer, the
generation lengths and the training sequences find an answer's tokens here.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

from ivedu.arguments import check_positive_int, check_sequence, check_strs
from ivedu.world import Example, Task


@dataclass(frozen=True)
class PromptFormat:
    """The fixed words of a plain-text prompt. ``separator`` ends an answer before the next demonstration."""

    input_prefix: str = "input :"
    output_prefix: str = "output :"
    separator: str = ";"
    instruction_end: str = "."

    @property
    def stop(self) -> tuple[str, ...]:
        """The strings that end an answer: a generated answer is cut at the first of them (and at
        the tokenizer's EOS). In a plain format, the separator that would start the next
        demonstration (``;`` in the tiny format, a new line in :data:`QA_FORMAT`)."""
        return (self.separator,)

    def words(self) -> set[str]:
        """Every word the format itself adds to a prompt (a word-level tokenizer needs them)."""
        return {w for part in (self.input_prefix, self.output_prefix, self.separator, self.instruction_end)
                for w in part.split()}

    def instructed(self, instruction: str, x: str) -> str:
        """``input : x . <instruction> . output :``.

        The instruction follows the input, as the relation follows the subject in the statement
        "peru has the capital lima": the tiny model then retrieves what it knows about ``x`` the
        same way under an instruction as in a statement, which lets instruction following carry
        over to facts it only ever saw in statements.
        """
        end = self.instruction_end
        return f"{self.input_prefix} {x} {end} {instruction} {end} {self.output_prefix}"

    def query(self, x: str) -> str:
        """``input : x output :``: the input alone, no instruction, no demonstrations."""
        return f"{self.input_prefix} {x} {self.output_prefix}"

    def fewshot(self, demos: Sequence[tuple[str, str]], x: str) -> str:
        """Demonstrations ``input : x output : y ;`` (``(input, output)`` pairs), then the query."""
        parts = [f"{self.query(d)} {y} {self.separator}" for d, y in demos]
        return " ".join([*parts, self.query(x)])


TINY_FORMAT = PromptFormat()
# Todd et al.'s plain format for real models: "Q: x" then "A: y", one line each.
QA_FORMAT = PromptFormat(input_prefix="Q:", output_prefix="A:", separator="\n", instruction_end="\n")
# The answer-length constraint of chat prompts: function-vector answers are one word or a
# short name, and a chat model otherwise answers in a sentence ("The capital of France is
# Paris."), whose first token is never the answer's.
ONE_WORD = "Answer with one word only."


@dataclass(frozen=True)
class ChatFormat(PromptFormat):
    """Prompts written in a chat model's own template: the model's messages, not plain text.

    The template's text is taken apart once (by :func:`chat_format`) into the pieces around
    messages: ``head`` before the first user message, ``user_end`` between a user message and
    the assistant's reply, ``turn_end`` between that reply and the next user message, and
    ``open_turn`` after the last user message, ending where the assistant starts to answer
    (``<|im_end|>\\n<|im_start|>assistant\\n`` in ChatML). An instructed prompt is one user
    message, ``<instruction> <constraint>`` then the input on its own line; a bare prompt is
    the input alone; a few-shot prompt is a conversation, each demonstration a user turn and
    the assistant's answer. ``reply_end``: what the template writes after the assistant's last
    reply (``<|im_end|>\\n`` in ChatML), whose text ends an answer (:attr:`stop`).
    """

    head: str = ""
    user_end: str = ""
    turn_end: str = ""
    open_turn: str = ""
    constraint: str = ONE_WORD
    reply_end: str = ""

    @property
    def stop(self) -> tuple[str, ...]:
        """The template's end of the assistant's turn (``<|im_end|>``, ``</s>``, ``<end_of_turn>``):
        an answer ends where the model closes its reply, whatever the plain format's separator."""
        end = self.reply_end.strip()
        return (end,) if end else ()

    def conversation(self, turns: Sequence[tuple[str, str]], last: str) -> str:
        """``turns`` (user message, assistant reply) in the template, then ``last`` with the reply open."""
        done = "".join(f"{u}{self.user_end}{a}{self.turn_end}" for u, a in turns)
        return f"{self.head}{done}{last}{self.open_turn}"

    def instructed(self, instruction: str, x: str) -> str:
        ask = f"{instruction} {self.constraint}".strip()
        return self.conversation([], f"{ask}\n{x}")

    def query(self, x: str) -> str:
        return self.conversation([], x)

    def fewshot(self, demos: Sequence[tuple[str, str]], x: str) -> str:
        return self.conversation(list(demos), x)


# Markers no template contains, one per message of the probe conversation.
_MARKS = tuple(f"\u2063IVEDU_{i}\u2063" for i in range(4))


def chat_format(tokenizer, base: PromptFormat = QA_FORMAT, system: str | None = None,
                constraint: str = ONE_WORD) -> PromptFormat:
    """``tokenizer``'s chat template as a :class:`ChatFormat`, or ``base`` when it has none.

    The template is rendered once around marker messages -- user, assistant, user, with the
    generation prompt, ``system`` as the system message when given -- and cut at the markers;
    a template that does not render a conversation as the same pieces every turn (checked
    against a one-turn rendering) is refused. When the tokenizer adds its BOS token on every
    encode (Llama-2), a BOS written by the template is dropped, so prompts do not start with two.
    What it writes after a conversation's last assistant reply is the format's ``reply_end``, the
    end of an answer (:attr:`ChatFormat.stop`); none when it writes nothing there.
    """
    if not getattr(tokenizer, "chat_template", None):
        return base
    sys_msgs = [{"role": "system", "content": system}] if system else []
    u1, a1, u2, one = _MARKS
    probe = sys_msgs + [{"role": "user", "content": u1}, {"role": "assistant", "content": a1},
                        {"role": "user", "content": u2}]
    text = tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
    single = tokenizer.apply_chat_template(sys_msgs + [{"role": "user", "content": one}], tokenize=False,
                                           add_generation_prompt=True)
    if any(text.count(m) != 1 for m in (u1, a1, u2)) or single.count(one) != 1:
        raise ValueError("the tokenizer's chat template does not write each message exactly once; "
                         "pass a plain format (QA_FORMAT) instead of a chat format")
    head, rest = text.split(u1)
    user_end, rest = rest.split(a1)
    turn_end, open_turn = rest.split(u2)
    bos = tokenizer.bos_token
    if bos and head.startswith(bos) and tokenizer.encode("a")[:1] == [tokenizer.bos_token_id]:
        head, single = head[len(bos):], single[len(bos):]
    closed = tokenizer.apply_chat_template(probe[:-1], tokenize=False, add_generation_prompt=False)
    reply_end = closed.split(a1)[1] if closed.count(a1) == 1 else ""
    fmt = ChatFormat(base.input_prefix, base.output_prefix, base.separator, base.instruction_end,
                     head=head, user_end=user_end, turn_end=turn_end, open_turn=open_turn, constraint=constraint,
                     reply_end=reply_end)
    if fmt.conversation([], one) != single:
        raise ValueError("the tokenizer's chat template writes a conversation's first turn differently from a "
                         "single message, which ChatFormat cannot reproduce; pass a plain format (QA_FORMAT)")
    return fmt


def instructed_prompt(task: Task, x: str, phrasing: int, fmt: PromptFormat) -> str:
    """Zero-shot prompt with the task's instruction number ``phrasing`` (:meth:`PromptFormat.instructed`)."""
    return fmt.instructed(task.instructions[phrasing % len(task.instructions)], x)


def bare_prompt(x: str, fmt: PromptFormat) -> str:
    """The query alone: no instruction, no demonstrations."""
    return fmt.query(x)


def fewshot_prompt(demos: Sequence[Example], x: str, fmt: PromptFormat) -> str:
    """Demonstrations followed by the query (:meth:`PromptFormat.fewshot`)."""
    return fmt.fewshot([(d.input, d.output) for d in demos], x)


def statement_prompt(task: Task, x: str, template: int = 0) -> str:
    """The task's plain statement up to the answer: ``the capital of peru is``."""
    return task.statement_prefix(x, template)


def shuffled_fewshot_prompt(demos: Sequence[Example], x: str, rng: random.Random, fmt: PromptFormat) -> str:
    """Few-shot prompt whose demonstration answers are shuffled among the demonstrations.

    Todd et al.'s corrupted prompt: the format and the answer space are kept, but the
    input-output pairing that defines the task is broken.
    """
    outputs = [d.output for d in demos]
    rng.shuffle(outputs)
    return fmt.fewshot([(d.input, y) for d, y in zip(demos, outputs)], x)


def neutral_words(tasks: Sequence[Task], min_tasks: int = 3) -> list[str]:
    """Words that occur in the instructions of at least ``min_tasks`` tasks: they name no task."""
    check_sequence("tasks", tasks)
    check_positive_int("min_tasks", min_tasks)
    counts: dict[str, int] = {}
    for task in tasks:
        for word in {w for instruction in task.instructions for w in instruction.split()}:
            counts[word] = counts.get(word, 0) + 1
    return sorted(w for w, n in counts.items() if n >= min_tasks)


def neutral_prompt(x: str, words: Sequence[str], rng: random.Random, length: int = 3, *,
                   fmt: PromptFormat) -> str:
    """The instructed format with the instruction replaced by ``length`` random neutral words.

    A corruption that keeps the prompt's shape and length but carries no task.
    """
    if not words:
        raise ValueError("no neutral words given: see neutral_words(tasks)")
    check_strs("words", words)
    check_positive_int("length", length)
    filler = " ".join(rng.choice(list(words)) for _ in range(length))
    return fmt.instructed(filler, x)


# ----------------------------------------------------------------------------- an answer after its prompt


def join_answer(prompt: str, answer: str) -> str:
    """The text of ``answer`` following ``prompt``: after one space, or directly when the prompt
    is empty or ends in whitespace.

    A plain prompt ends in its output prefix (``output :``, ``A:``), and its answer is written
    after a space, as in the training text; a chat template's assistant header ends in a newline
    (``<|im_start|>assistant\\n``), after which the model writes its reply with no space.
    Every place that puts an answer after a prompt (scoring, generation lengths, training
    sequences) joins them here, so they all see the same tokens.
    """
    return prompt + answer if not prompt or prompt[-1].isspace() else f"{prompt} {answer}"


def answer_ids(tokenizer, prompt: str, answer: str) -> list[int]:
    """Token ids of ``answer`` as it follows ``prompt``: ``encode(join_answer(prompt, answer))``
    with the ids of ``encode(prompt)`` cut off its front.

    Both are encoded as :func:`ivedu.generation.prompt_ids` encodes a prompt (the tokenizer's
    own special tokens), so prompt ids + answer ids are exactly the ids of the joint text,
    whichever way the tokenizer marks the space before the answer. Raises ``ValueError`` when the prompt's
    tokens are not a prefix of the joint ones (the tokenizer merges the prompt's end with the
    answer): the answer's tokens are then not defined, and guessing would misalign every score.
    """
    return continuation_ids(tokenizer, tokenizer.encode(prompt), prompt, answer)


def continuation_ids(tokenizer, before: Sequence[int], prompt: str, answer: str) -> list[int]:
    """:func:`answer_ids` given ``before = tokenizer.encode(prompt)`` already (saves encoding it twice)."""
    joint = tokenizer.encode(join_answer(prompt, answer))
    if list(joint[:len(before)]) != list(before):
        raise ValueError(
            f"the tokenizer merges the end of the prompt ...{prompt[-30:]!r} with the answer {answer!r}: the "
            "prompt's tokens are not a prefix of the tokens of prompt + answer, so the answer's tokens are "
            "undefined. End the prompt with a separator the tokenizer keeps apart (e.g. 'A:' or a newline), "
            "not a trailing space; the answer is joined after one space (directly after whitespace)")
    return list(joint[len(before):])
