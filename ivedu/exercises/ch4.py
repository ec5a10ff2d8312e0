"""Checkers for chapter 4's exercises: the pieces of the guided loss and of EWC.

- Exercise 4.1, :func:`check_answer_start`: the last prompt token of each row of a
  right-padded batch (reference: :func:`ivedu.guided.answer_start_positions`).
- Exercise 4.2, :func:`check_guided_kl`: the reverse KL with temperature of the authors'
  ``KD_loss`` (reference: :func:`ivedu.guided.kd_loss`).
- Exercise 4.3, :func:`check_progressive_weight`: the weight of the progressive intervention
  (reference: :func:`ivedu.guided.progressive_weight`).
- Exercise 4.4, :func:`check_ewc_penalty`: EWC's diagonal-Fisher penalty
  (reference: :meth:`ivedu.continual.EWCObjective.penalty`).
"""

from __future__ import annotations

import copy
from typing import Callable

import torch

from ivedu.continual import EWCObjective
from ivedu.corpus import collate
from ivedu.exercises import Case, check_against_reference, passed, tiny_model, tiny_world
from ivedu.finetune import task_sequences
from ivedu.guided import answer_start_positions, kd_loss, progressive_weight
from ivedu.prompts import TINY_FORMAT


def check_answer_start(answer_start: Callable) -> None:
    """Exercise 4.1: ``answer_start(labels) -> LongTensor [batch]``.

    ``labels``: ``[batch, seq]`` from :func:`ivedu.corpus.collate` (``-100`` except on the
    answer; rows right-padded). Each row's index of its last prompt token: one before its
    first learnt label.
    """
    model, tokenizer = tiny_model()
    world = tiny_world()
    cases = []
    for name, rows in (("first_french", slice(0, 4)), ("middle", slice(10, 16)), ("capital", slice(0, 3))):
        sequences = task_sequences(tokenizer, world.task(name), fmt=TINY_FORMAT)[rows]
        labels = collate(sequences, tokenizer.pad_token_id)["labels"]
        cases.append(Case(f"on a batch of {len(sequences)} {name!r} sequences", (labels,)))
    mixed = task_sequences(tokenizer, world.task("capital"), fmt=TINY_FORMAT)[:2]
    mixed += task_sequences(tokenizer, world.task("reverse"), fmt=TINY_FORMAT)[:2]
    cases.append(Case("on a batch mixing short and long prompts (rows padded differently)",
                      (collate(mixed, tokenizer.pad_token_id)["labels"],)))
    n = check_against_reference(
        answer_start, answer_start_positions, cases,
        hint="the answer starts at the first label that is not -100 (labels != -100, then argmax over the "
             "sequence gives the first True); the prompt's last token is one position earlier. Padding is on "
             "the right, so position -1 is a pad token, not the prompt's end.")
    passed("answer-start positions", f"{n} batches match ivedu.guided.answer_start_positions")


def _logit_cases() -> list[Case]:
    g = torch.Generator().manual_seed(0)
    cases = []
    for label, shape, temperature in (("on logits [4, 9], T = 2", (4, 9), 2.0),
                                      ("on logits [4, 9], T = 1", (4, 9), 1.0),
                                      ("on logits [3, 5, 9] (every position), T = 2", (3, 5, 9), 2.0)):
        student = torch.randn(shape, generator=g) * 2
        teacher = torch.randn(shape, generator=g) * 2
        cases.append(Case(label, (student, teacher, temperature)))
    return cases


def check_guided_kl(guided_kl: Callable) -> None:
    """Exercise 4.2: ``guided_kl(student_logits, teacher_logits, temperature) -> scalar tensor``.

    ``KL(student || teacher)`` of ``softmax(logits / T)``, summed over the vocabulary (and
    positions, for 3-D logits) and divided by the batch size -- the authors' ``KD_loss``.
    """
    n = check_against_reference(
        guided_kl, lambda s, t, T: kd_loss(s, t, T), _logit_cases(),
        hint="it is the *reverse* KL: sum p_student * (log p_student - log p_teacher), both at temperature T, "
             "i.e. F.kl_div(log_softmax(teacher / T), softmax(student / T), reduction='batchmean'). "
             "'batchmean' divides by the first dimension only (the batch), not by every position.")
    passed("reverse KL at temperature T", f"{n} logit pairs match ivedu.guided.kd_loss")


def check_progressive_weight(weight: Callable) -> None:
    """Exercise 4.3: ``weight(step, steps) -> float``: 1 at step 0, linearly down to 0 at
    ``steps - 1``, and 0 for any later step."""
    cases = [Case(f"at step {s} of {n}", (s, n)) for n in (5, 100) for s in (0, 1, n // 2, n - 1)]
    cases += [Case("at step 0 of a 1-step stage", (0, 1)), Case("at step 150 of a 100-step schedule", (150, 100))]
    n = check_against_reference(
        weight, progressive_weight, cases,
        hint="the last step (steps - 1) must reach exactly 0, so divide by steps - 1 (guarding steps = 1), "
             "and never go below 0 once the schedule is over.")
    passed("progressive intervention weight", f"{n} steps match ivedu.guided.progressive_weight")


def check_ewc_penalty(ewc_penalty: Callable) -> None:
    """Exercise 4.4: ``ewc_penalty(model, anchor, fisher, lam) -> scalar tensor``.

    ``lam / 2 * sum_i F_i * (theta_i - theta*_i)^2`` over the model's parameters, with
    ``anchor`` and ``fisher`` dicts keyed by ``model.named_parameters()`` names.
    """
    model, _ = tiny_model()
    anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
    g = torch.Generator().manual_seed(0)
    moved = copy.deepcopy(model)
    with torch.no_grad():
        for p in moved.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.01)
    fisher = {n: torch.rand(a.shape, generator=g) for n, a in anchor.items()}
    ones = {n: torch.ones_like(a) for n, a in anchor.items()}

    def reference(m, a, f, lam):
        return lam / 2 * EWCObjective(a, f, lam).penalty(m)

    cases = [Case("with the tiny model at its anchor (no change)", (model, anchor, fisher, 10.0)),
             Case("with a moved copy, Fisher of ones, lambda 1", (moved, anchor, ones, 1.0)),
             Case("with a moved copy, a random Fisher, lambda 100", (moved, anchor, fisher, 100.0))]
    n = check_against_reference(
        ewc_penalty, reference, cases, rtol=1e-3,
        hint="weight each parameter's squared change (p - anchor[name]) ** 2 by fisher[name], sum over every "
             "parameter and element, and multiply by lam / 2 (the 1/2 is part of EWC's definition).")
    passed("EWC penalty", f"{n} models match ivedu.continual.EWCObjective.penalty")
