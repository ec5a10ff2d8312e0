"""The two abilities the paper separates, measured per task.

- **Knowledge** ``P(y | x)``: the answer's likelihood in the task's plain statement, with no
  instruction ("the capital of peru is" -> "lima"), ranked against wrong answers of the
  same kind.
- **Instruction following** ``P(y^c | c, x)``: greedy generation under the instruction,
  scored by exact match, plus the teacher-forced probability of the conformant answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ivedu.generation import answer_ids, answer_logprobs, greedy_generate, last_token_logits
from ivedu.prompts import instructed_prompt, statement_prompt
from ivedu.world import Task


@dataclass(frozen=True)
class InstructionScore:
    """Instruction following on one task: means over examples and instruction phrasings."""

    task: str
    n: int
    exact_match: float
    first_token_accuracy: float
    answer_prob: float


@dataclass(frozen=True)
class KnowledgeScore:
    """Knowledge of one task in statement form: gold-answer ranking and probability."""

    task: str
    n: int
    ranking_accuracy: float
    gold_prob: float


def exact_match(predictions: Sequence[str], golds: Sequence[str]) -> list[bool]:
    """Whitespace-normalised string equality, one flag per prediction."""
    return [" ".join(p.split()) == " ".join(g.split()) for p, g in zip(predictions, golds)]


def first_token_accuracy(model, tokenizer, prompts: Sequence[str], golds: Sequence[str]) -> list[bool]:
    """Whether the most likely next token is the gold answer's first token, per prompt."""
    logits = last_token_logits(model, tokenizer, prompts)
    firsts = torch.tensor([answer_ids(tokenizer, g)[0] for g in golds])
    return (logits.argmax(-1) == firsts).tolist()


def instruction_following_score(model, tokenizer, task: Task, split: str = "heldout",
                                phrasings: Sequence[int] | None = None) -> InstructionScore:
    """Exact match, first-token accuracy and answer probability under the task's instructions."""
    examples = task.split(split)
    phrasings = range(len(task.instructions)) if phrasings is None else phrasings
    prompts = [instructed_prompt(task, ex.input, p) for p in phrasings for ex in examples]
    golds = [ex.output for _ in phrasings for ex in examples]
    if not prompts:
        raise ValueError(f"task {task.name!r} has no examples in split {split!r}")
    max_new = max(len(answer_ids(tokenizer, g)) for g in golds) + 1
    em = exact_match(greedy_generate(model, tokenizer, prompts, max_new_tokens=max_new), golds)
    ft = first_token_accuracy(model, tokenizer, prompts, golds)
    prob = answer_logprobs(model, tokenizer, prompts, golds).exp()
    return InstructionScore(task.name, len(prompts), _mean(em), _mean(ft), float(prob.mean()))


def knowledge_score(model, tokenizer, task: Task, split: str = "heldout") -> KnowledgeScore:
    """Ranking accuracy of the gold answer among the example's candidates, statement format.

    Each candidate is scored by the summed log-probability of its tokens after the statement
    prefix; the gold answer must score strictly highest.
    """
    examples = task.split(split)
    if not examples:
        raise ValueError(f"task {task.name!r} has no examples in split {split!r}")
    prompts, answers = [], []
    for ex in examples:
        for c in ex.candidates:
            prompts.append(statement_prompt(task, ex.input))
            answers.append(c)
    scores = answer_logprobs(model, tokenizer, prompts, answers)
    correct, gold_probs, start = [], [], 0
    for ex in examples:
        k = len(ex.candidates)
        s = scores[start:start + k]
        correct.append(bool((s[0] > s[1:]).all()))
        gold_probs.append(float(s[0].exp()))
        start += k
    return KnowledgeScore(task.name, len(examples), _mean(correct), _mean(gold_probs))


def _mean(xs: Sequence[float | bool]) -> float:
    return float(sum(xs)) / len(xs) if len(xs) else float("nan")


@dataclass(frozen=True)
class TaskScores:
    """Both abilities on one task, side by side (one row of the chapters' tables)."""

    task: str
    exact_match: float
    first_token_accuracy: float
    answer_prob: float
    ranking_accuracy: float
    gold_prob: float


def score_tasks(model, tokenizer, tasks: Sequence[Task], split: str = "heldout") -> list[TaskScores]:
    """Instruction following and knowledge of each task on ``split``."""
    rows = []
    for task in tasks:
        ifs = instruction_following_score(model, tokenizer, task, split)
        kn = knowledge_score(model, tokenizer, task, split)
        rows.append(TaskScores(task.name, ifs.exact_match, ifs.first_token_accuracy, ifs.answer_prob,
                               kn.ranking_accuracy, kn.gold_prob))
    return rows


def format_scores(rows: Sequence[TaskScores]) -> str:
    """A plain-text table of :func:`score_tasks` rows, with a mean row."""
    header = f"{'task':<12}{'exact match':>12}{'first token':>12}{'P(answer)':>11}{'ranking':>9}{'P(gold)':>9}"
    lines = [header, "-" * len(header)]
    fields = ("exact_match", "first_token_accuracy", "answer_prob", "ranking_accuracy", "gold_prob")
    widths = (12, 12, 11, 9, 9)
    for row in rows:
        lines.append(f"{row.task:<12}" + "".join(f"{getattr(row, f):>{w}.2f}" for f, w in zip(fields, widths)))
    means = [sum(getattr(r, f) for r in rows) / len(rows) for f in fields]
    lines.append("-" * len(header))
    lines.append(f"{'mean':<12}" + "".join(f"{m:>{w}.2f}" for m, w in zip(means, widths)))
    return "\n".join(lines)
