"""Checkers for chapter 4's exercises: the guided objective, term by term, and EWC.

- Exercise 4.1, :func:`check_teacher_logits`: the previous model's logits with the vector
  added at each row's answer start -- the last prompt token of a right-padded batch
  (references: :func:`ivedu.guided.answer_start_positions`, :func:`ivedu.hooks.add_to_residual`,
  as :meth:`ivedu.guided.GuidedObjective.teacher_outputs` does it).
- Exercise 4.2, :func:`check_guided_kl`: the reverse KL with temperature of the authors'
  ``KD_loss`` (reference: :func:`ivedu.guided.kd_loss`).
- Exercise 4.3, :func:`check_guided_objective`: the guided objective of one batch assembled
  from its terms -- cross-entropy, the answer-start KL, the all-position KL, the head-output
  MSE, and the progressive weight of the student's own vector (reference:
  :class:`ivedu.guided.GuidedObjective`, its ``history`` of one step).
- Exercise 4.4, :func:`check_ewc_penalty`: EWC's diagonal-Fisher penalty, the baseline the
  chapter compares with (reference: :meth:`ivedu.continual.EWCObjective.penalty`).

Exercises 4.1 and 4.3 are checked on the tiny model (teacher) and a damaged copy (student),
whose predictions differ, and on the chapter's own models, batch and vector when given;
exercise 4.4 on the tiny model and on a decoder layer of the chapter's model.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from functools import lru_cache
from typing import Callable

import torch

from ivedu.continual import EWCObjective
from ivedu.corpus import collate
from ivedu.exercises import (Case, check_against_reference, passed, perturbed_tiny_model, rounding_rtol, tiny_model,
                             tiny_study, tiny_world)
from ivedu.finetune import task_sequences
from ivedu.guided import GuidedObjective, answer_start_positions, kd_loss
from ivedu.hooks import add_to_residual
from ivedu.settings import ExtractionSettings, GuidedSettings, settings as profile_settings


@lru_cache(maxsize=1)
def _tiny_batches() -> tuple[dict, dict]:
    """Two right-padded training batches of the tiny world: ``last_french`` rows, and rows of a
    short-prompt and a long-prompt task mixed (their answers start at different positions)."""
    lm = tiny_study()
    world = tiny_world()
    plain = collate(task_sequences(lm, world.task("last_french"))[:6], lm.tokenizer.pad_token_id)
    mixed = task_sequences(lm, world.task("capital"))[:2] + task_sequences(lm, world.task("reverse"))[:2]
    return plain, collate(mixed, lm.tokenizer.pad_token_id)


@lru_cache(maxsize=1)
def _tiny_vector() -> tuple[torch.Tensor, tuple]:
    """The tiny model's ``last_french`` vector and its heads (chapter 4's extraction, 12 prompts)."""
    from ivedu.extraction import build_vectors, scan_tasks

    lm = tiny_study()
    task = tiny_world().task("last_french")
    iv = build_vectors(lm.model, scan_tasks(lm, [task], 12, 0, ExtractionSettings()), 2)[task.name]
    return iv.vector, iv.heads


def teacher_logits_reference(teacher, batch: dict, vector: torch.Tensor, layer: int, scale: float = 1.0,
                             site: str = "attention") -> torch.Tensor:
    """Exercise 4.1's reference: ``teacher``'s logits ``[batch, seq, vocab]`` with ``scale * vector``
    added in ``layer`` at each row's last prompt token."""
    positions = answer_start_positions(batch["labels"])
    with torch.no_grad(), add_to_residual(teacher, layer, vector, positions=positions, scale=scale, site=site):
        return teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def check_teacher_logits(teacher_logits: Callable, teacher=None, batch=None, vector=None, layer: int = 0,
                         scale: float = 1.0, site: str = "attention") -> None:
    """Exercise 4.1: ``teacher_logits(teacher, batch, vector, layer, scale=1.0, site="attention") ->
    Tensor [batch, seq, vocab]``: the teacher's logits on ``batch`` (from :func:`ivedu.corpus.collate`:
    right-padded, labels ``-100`` except on the answer) with ``scale * vector`` added at each row's
    last prompt token -- one before its first learnt label -- and nowhere else."""
    model, _ = tiny_model()
    vector_tiny, _ = _tiny_vector()
    plain, mixed = _tiny_batches()
    cases = [Case("on 6 'last_french' rows, vector in layer 0", (model, plain, vector_tiny, 0, 1.0, "attention")),
             Case("on rows whose answers start at different positions, layer 1, scale 2",
                  (model, mixed, vector_tiny, 1, 2.0, "attention")),
             Case("on the same rows, added after the whole layer (site='layer')",
                  (model, mixed, vector_tiny, 2, 1.0, "layer"))]
    if teacher is not None:
        cases.append(Case(f"with the chapter's model, batch and vector (layer {layer}, scale {scale}, site {site!r})",
                          (teacher, batch, vector, layer, scale, site)))
    n = check_against_reference(
        teacher_logits, teacher_logits_reference, cases, atol=1e-4,
        hint="each row's answer starts at its first label that is not -100 ((labels != -100).long().argmax(-1)); "
             "its last prompt token, the position whose prediction is the first answer token, is one before. Pass "
             "those positions as a LongTensor [batch] to ivedu.hooks.add_to_residual(teacher, layer, vector, "
             "positions=..., scale=scale, site=site): the batch is right-padded, so positions='last' would add the "
             "vector to a pad token. Run the teacher under torch.no_grad() on input_ids and attention_mask.")
    passed("the steered teacher", f"{n} batches match the teacher of ivedu.guided.GuidedObjective")


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

    Profile-independent: the function is arithmetic on two logit tensors, whatever model made
    them, so the check takes no model; exercise 4.3's check runs this KL inside the guided
    objective on the chapter's own models.
    """
    n = check_against_reference(
        guided_kl, lambda s, t, T: kd_loss(s, t, T), _logit_cases(),
        hint="it is the *reverse* KL: sum p_student * (log p_student - log p_teacher), both at temperature T, "
             "i.e. F.kl_div(log_softmax(teacher / T), softmax(student / T), reduction='batchmean'). "
             "'batchmean' divides by the first dimension only (the batch), not by every position.")
    passed("reverse KL at temperature T", f"{n} logit pairs match ivedu.guided.kd_loss")


TERMS = ("ce", "kl_start", "kl_all", "head_mse", "vector_weight")


def guided_terms_reference(student, teacher, batch: dict, vector: torch.Tensor, heads, settings: GuidedSettings,
                           step: int, steps: int) -> dict[str, float]:
    """Exercise 4.3's reference: one call of :class:`ivedu.guided.GuidedObjective`, its terms as floats."""
    objective = GuidedObjective(teacher, vector, heads, settings, steps)
    objective(student, batch, step)
    return {key: objective.history[-1][key] for key in TERMS}


def _as_floats(fn: Callable) -> Callable:
    """``fn`` with tensor values of its dict turned into floats (so a learner may return either)."""
    def wrapped(*args):
        result = fn(*args)
        if isinstance(result, dict):
            return {k: float(v.detach()) if isinstance(v, torch.Tensor) else v for k, v in result.items()}
        return result

    wrapped.__name__ = getattr(fn, "__name__", repr(fn))
    return wrapped


def check_guided_objective(guided_terms: Callable, student=None, teacher=None, batch=None, vector=None, heads=(),
                           settings: GuidedSettings | None = None, steps: int = 100) -> None:
    """Exercise 4.3: ``guided_terms(student, teacher, batch, vector, heads, settings, step, steps) ->
    {"ce", "kl_start", "kl_all", "head_mse", "vector_weight"}``: each term of the guided loss as it
    enters the sum (weighted by ``settings``, gated), and the progressive weight of the student's
    vector at ``step``; the loss is the sum of the four terms. Checked against
    :class:`ivedu.guided.GuidedObjective` on the tiny model (teacher) and a damaged copy (student)
    at the start, middle and end of the schedule, then on the chapter's own models when given.
    """
    model, _ = tiny_model()
    damaged, _ = perturbed_tiny_model()
    vector_tiny, heads_tiny = _tiny_vector()
    plain, mixed = _tiny_batches()
    loss = profile_settings("ch4", "tiny").guided.loss
    cases = [Case(f"with a damaged tiny student, at step {step} of a {steps_}-step schedule",
                  (damaged, model, batch_, vector_tiny, heads_tiny, settings_, step, steps_))
             for step, steps_, batch_, settings_ in (
                 (0, 10, plain, loss), (4, 10, mixed, loss), (9, 10, plain, loss),
                 (20, 10, mixed, replace(loss, kl_start=20.0, progressive_steps=None)),
                 (3, 10, plain, replace(loss, layer=1, kl_gate=0.0, mse_gate=0.0, temperature=1.0)))]
    if student is not None:
        chapter = settings if settings is not None else loss
        cases += [Case(f"with the chapter's student and teacher, at step {step} of {steps}",
                       (student, teacher, batch, vector, heads, chapter, step, steps)) for step in (0, steps - 1)]
    was_training = [m.training for m in (damaged, student) if m is not None]
    for m in (damaged, student):
        if m is not None:
            m.eval()  # no dropout: the learner's forward pass and the reference's must be the same function
    try:
        n = check_against_reference(
            _as_floats(guided_terms), guided_terms_reference, cases, rtol=1e-3, atol=1e-5,
            hint="positions = answer_start_positions(batch['labels']); weight = progressive_weight(step, "
                 "settings.progressive_steps or steps) (0 when settings.progressive is False). Teacher: its logits "
                 "with the vector added at those positions (exercise 4.1, scale settings.scale, layer settings.layer, "
                 "site settings.site), and its head outputs from a pass without the vector (record_head_outputs). "
                 "Student: student(**batch) with weight * settings.scale * vector added at the positions, recording its "
                 "head outputs (detach=False); its .loss is the cross-entropy. Then kl_start = settings.kl_start * "
                 "gated(kd_loss(z_S[rows, positions], z_T[rows, positions], T), kl_gate), kl_all = settings.kl_all * "
                 "gated(kd_loss(z_S, z_T, T, batch['attention_mask']), kl_gate) and head_mse = settings.head_mse * "
                 "head_mse(student_heads, teacher_heads, heads, positions, mse_gate).")
    finally:
        for m, mode in zip([m for m in (damaged, student) if m is not None], was_training):
            m.train(mode)
    passed("the guided objective", f"{n} batches and steps match ivedu.guided.GuidedObjective term by term")


def ewc_penalty_reference(model, anchor: dict, fisher: dict, lam: float) -> torch.Tensor:
    """Exercise 4.4's reference: ``lam / 2`` times :meth:`ivedu.continual.EWCObjective.penalty`."""
    return lam / 2 * EWCObjective(anchor, fisher, lam).penalty(model)


def _moved_anchor(module: torch.nn.Module, seed: int = 0) -> tuple[dict, dict]:
    """An anchor and a Fisher for ``module``'s parameters: each parameter moved by 1% of its
    standard deviation, and a random positive Fisher, on the parameter's device and in its dtype."""
    generator = torch.Generator().manual_seed(seed)
    anchor, fisher = {}, {}
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=generator).to(p.device, p.dtype)
            anchor[name] = p.detach() + noise * 0.01 * p.detach().float().std().to(p.dtype)
            fisher[name] = torch.rand(p.shape, generator=generator).to(p.device)
    return anchor, fisher


EWC_HINT = ("weight each parameter's squared change (p - anchor[name]) ** 2 by fisher[name], sum over every "
            "parameter and element, and multiply by lam / 2 (the 1/2 is part of EWC's definition).")


def check_ewc_penalty(ewc_penalty: Callable, model=None) -> None:
    """Exercise 4.4: ``ewc_penalty(model, anchor, fisher, lam) -> scalar tensor``.

    ``lam / 2 * sum_i F_i * (theta_i - theta*_i)^2`` over the model's parameters, with
    ``anchor`` and ``fisher`` dicts keyed by ``model.named_parameters()`` names. Checked on the
    tiny model, then -- when given -- on the last decoder layer of the chapter's ``model`` (its
    real weights, dtype and device; the whole model would need two more copies of it in memory),
    with an anchor 1% of each weight's spread away, to ``1e-3`` relative or two roundings of
    the weights' dtype (:func:`ivedu.exercises.rounding_rtol`).
    """
    tiny, _ = tiny_model()
    anchor = {n: p.detach().clone() for n, p in tiny.named_parameters()}
    g = torch.Generator().manual_seed(0)
    moved = copy.deepcopy(tiny)
    with torch.no_grad():
        for p in moved.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.01)
    fisher = {n: torch.rand(a.shape, generator=g) for n, a in anchor.items()}
    ones = {n: torch.ones_like(a) for n, a in anchor.items()}
    cases = [Case("with the tiny model at its anchor (no change)", (tiny, anchor, fisher, 10.0)),
             Case("with a moved copy, Fisher of ones, lambda 1", (moved, anchor, ones, 1.0)),
             Case("with a moved copy, a random Fisher, lambda 100", (moved, anchor, fisher, 100.0))]
    n = check_against_reference(ewc_penalty, ewc_penalty_reference, cases, rtol=1e-3, hint=EWC_HINT)
    if model is not None:
        from ivedu.architectures import model_layout

        layer = model_layout(model).layers[-1]
        was = [p.requires_grad for p in layer.parameters()]
        layer.requires_grad_(True)  # the reference penalises the weights that can move, here all of them
        try:
            layer_anchor, layer_fisher = _moved_anchor(layer)
            n += check_against_reference(
                ewc_penalty, ewc_penalty_reference,
                [Case("with the last decoder layer of the chapter's model, moved from its anchor, lambda 1000",
                      (layer, layer_anchor, layer_fisher, 1000.0))],
                rtol=rounding_rtol(model, 1e-3), hint=EWC_HINT)
        finally:
            for p, grad in zip(layer.parameters(), was):
                p.requires_grad_(grad)
    passed("EWC penalty", f"{n} models match ivedu.continual.EWCObjective.penalty")
