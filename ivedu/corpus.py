"""Training sequences: prompts with their answers, and a mask saying which tokens to learn.

A sequence is built from ``(text, learn)`` or ``(text, learn, eos)`` pieces. Only the answer
pieces are learnt: the inputs are random draws, so predicting them would only add noise to
the loss. The pieces are joined and tokenized exactly as a prompt and its answer are when
they are scored (:func:`ivedu.prompts.join_answer`), so a model learns its answers on the
tokens it is later tested on.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

import torch
from transformers import PreTrainedTokenizerBase

from ivedu.arguments import check_int, check_mapping, check_nonempty, check_number, check_positive_int, check_sequence
from ivedu.prompts import (TINY_FORMAT, PromptFormat, bare_prompt, continuation_ids, instructed_prompt, join_answer,
                           statement_prompt)
from ivedu.world import Example, Task

IGNORE_INDEX = -100


@dataclass(frozen=True)
class TrainingSequence:
    """Token ids and labels of one training text (labels are ``-100`` where nothing is learnt)."""

    input_ids: list[int]
    labels: list[int]


def encode_pieces(tokenizer: PreTrainedTokenizerBase,
                  pieces: Sequence[tuple[str, bool] | tuple[str, bool, bool]]) -> TrainingSequence:
    """Encode ``(text, learn)`` or ``(text, learn, eos)`` pieces as one text.

    The text grows piece by piece, each joined to the text so far by
    :func:`ivedu.prompts.join_answer` (after one space, or directly when the text so far
    ends in whitespace such as a chat header's newline), and the ids of a piece are the ids
    the joint encoding gains when it is added. Encoding each piece alone with a leading
    space would be right only for a word-level tokenizer: a byte-level BPE has no space after
    ``assistant\\n``, and SentencePiece may make the space a token of its own. The text is
    encoded with the tokenizer's own special tokens, so BOS is there exactly when the
    tokenizer adds it (a chat template that writes ``<|im_start|>`` itself gets no second
    one). ``eos=True`` puts ``tokenizer.eos_token_id`` right after the piece's ids, learnt
    when the piece is: as an id, not as text, because the text ``" <eos>"`` tokenizes to a
    stray space token before EOS in a BPE tokenizer. Raises ``ValueError`` when the tokenizer
    merges a piece with the text before it (see :func:`ivedu.prompts.answer_ids`).
    """
    check_sequence("pieces", pieces)
    text = ""
    before = tokenizer.encode(text)
    ids: list[int] = list(before)
    labels: list[int] = [IGNORE_INDEX] * len(ids)
    for text_piece, learn, *rest in pieces:
        piece_ids = continuation_ids(tokenizer, before, text, text_piece)
        text = join_answer(text, text_piece)
        before = before + piece_ids
        if rest and rest[0]:
            if tokenizer.eos_token_id is None:
                raise ValueError("the tokenizer has no EOS token, so a piece cannot end with one; "
                                 "set tokenizer.eos_token")
            piece_ids = piece_ids + [tokenizer.eos_token_id]
        ids.extend(piece_ids)
        labels.extend(piece_ids if learn else [IGNORE_INDEX] * len(piece_ids))
    return TrainingSequence(ids, labels)


def instructed_sequence(tokenizer, task: Task, ex: Example, phrasing: int,
                        *, fmt: PromptFormat) -> TrainingSequence:
    """``input : x . <instruction> . output : y <eos>`` learning ``y <eos>``."""
    check_int("phrasing", phrasing, 0, len(task.instructions) - 1)
    return encode_pieces(tokenizer, [(instructed_prompt(task, ex.input, phrasing, fmt), False),
                                     (ex.output, True, True)])


def fewshot_sequence(tokenizer, demos: Sequence[Example], query: Example,
                     *, fmt: PromptFormat, learn_first: bool = False) -> TrainingSequence:
    """Demonstrations then a query; every answer after the first is learnt.

    The first demonstration's answer has no context at all: learning it would teach the
    model a confident default task for the bare prompt ``input : x output :`` (whichever task
    it saw ``x`` with), a default that an instruction vector would then have to fight. Left
    unlearnt (``learn_first=False``), the bare prompt stays what it is in a real LLM: a
    format the model was never trained to answer on its own.
    """
    check_sequence("demos", demos)
    pieces: list[tuple[str, bool] | tuple[str, bool, bool]] = []
    for i, d in enumerate(demos):
        pieces += [(bare_prompt(d.input, fmt), False), (f"{d.output} {fmt.separator}", learn_first or i > 0)]
    pieces += [(bare_prompt(query.input, fmt), False), (query.output, True, True)]
    return encode_pieces(tokenizer, pieces)


def statement_sequence(tokenizer, task: Task, ex: Example, template: int = 0) -> TrainingSequence:
    """``the capital of peru is lima <eos>`` learning ``lima <eos>``: knowledge with no instruction."""
    check_int("template", template, 0, len(task.statements) - 1)
    return encode_pieces(tokenizer, [(statement_prompt(task, ex.input, template), False),
                                     (ex.output, True, True)])


@dataclass(frozen=True)
class Mixture:
    """How often each format is drawn when sampling a training sequence."""

    instructed: float = 0.35
    fewshot: float = 0.30
    statement: float = 0.35
    max_demos: int = 4

    def __post_init__(self):
        for name in ("instructed", "fewshot", "statement"):
            check_number(name, getattr(self, name), 0.0, 1.0)
        check_positive_int("max_demos", self.max_demos)


def sample_sequence(rng: random.Random, tokenizer, tasks: Sequence[Task], mixture: Mixture,
                    statement_examples: dict[str, Sequence[Example]]) -> TrainingSequence:
    """Draw one training sequence of the tiny model's own instruction tuning (in the tiny
    format): a random task, kind of prompt and example (train split only).

    ``statement_examples`` says which examples each task's statements cover: for facts that
    is every example (knowledge of held-out facts comes only from statements).
    """
    check_nonempty("tasks", tasks, "task")
    check_mapping("statement_examples", statement_examples, "task")
    task = rng.choice(tasks)
    r = rng.random()
    if r < mixture.instructed:
        return instructed_sequence(tokenizer, task, rng.choice(task.train), rng.randrange(len(task.instructions)),
                                   fmt=TINY_FORMAT)
    if r < mixture.instructed + mixture.fewshot:
        k = rng.randint(1, mixture.max_demos)
        *demos, query = rng.sample(task.train, k + 1)
        return fewshot_sequence(tokenizer, demos, query, fmt=TINY_FORMAT)
    return statement_sequence(tokenizer, task, rng.choice(statement_examples[task.name]),
                              rng.randrange(len(task.statements)))


def collate(sequences: Sequence[TrainingSequence], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch into ``input_ids``, ``attention_mask`` and ``labels``: [batch, seq]."""
    check_nonempty("sequences", sequences, "TrainingSequence")
    check_int("pad_id", pad_id, 0, torch.iinfo(torch.long).max)  # a token id, in a long tensor
    width = max(len(s.input_ids) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    labels = torch.full((len(sequences), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        n = len(s.input_ids)
        ids[i, :n] = torch.tensor(s.input_ids)
        labels[i, :n] = torch.tensor(s.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
