"""Checkers for chapter 3's exercises: what fine-tuning did to the old vectors, and what they explain.

- Exercise 3.1, :func:`check_restoration`: the fine-tuned model's exact match bare, with the
  original vector added and with a random vector of equal norm -- restoration and its control
  (references: :func:`ivedu.intervention.steered_exact_match`,
  :func:`ivedu.intervention.random_vector_like`, as :func:`ivedu.dynamics.restoration` uses them).
- Exercise 3.2, :func:`check_restored_share`: the share of the lost instruction following that
  the vector gives back, and the random control's share, from the means over tasks
  (reference: :func:`ivedu.dynamics.restored_share`).
- Exercise 3.3, :func:`check_similarity_r2`: the R² of retained instruction following on a
  similarity measure over (task, stage) points (reference: :func:`ivedu.dynamics.r_squared`).
- Exercise 3.4, :func:`check_projection`: the mean projection of hidden states on unit
  directions, per layer -- the overlay read-out (reference: :func:`ivedu.dynamics.projections`).

Exercises 3.1 and 3.4 run on what a model computes, so their checks also run on the chapter's
own model or states when the chapter passes them; exercises 3.2 and 3.3 are arithmetic on
scores and are the same check on every profile.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

import numpy as np
import torch

from ivedu.dynamics import TaskAtStage, instructed_set, projections, r_squared, restored_share
from ivedu.exercises import (Case, check_against_reference, one_in, passed, perturbed_tiny_model, tiny_study,
                             tiny_world)
from ivedu.intervention import Steering, random_vector_like, steered_exact_match
from ivedu.prompts import TINY_FORMAT
from ivedu.settings import ExtractionSettings


def restoration_reference(lm, prompts, answers, vector, steering, seed=0) -> dict[str, float]:
    """Exercise 3.1's reference: exact match of the model under study ``lm`` on ``prompts`` bare,
    with ``vector`` added as ``steering`` says, and with ``random_vector_like(vector, seed)`` there instead."""
    def em(v):
        return steered_exact_match(lm, prompts, answers, v, steering)

    return {"bare": em(None), "vector": em(vector), "random": em(random_vector_like(vector, seed))}


@lru_cache(maxsize=1)
def _original_vectors() -> dict[str, torch.Tensor]:
    """The tiny model's vectors (top 2 heads, 12 train prompts) of two tasks the damaged copy has lost."""
    from ivedu.extraction import build_vectors, scan_tasks

    lm = tiny_study()
    world = tiny_world()
    tasks = [world.task("sentiment"), world.task("bracket")]
    scans = scan_tasks(lm, tasks, 12, 0, ExtractionSettings())
    return {name: iv.vector for name, iv in build_vectors(lm.model, scans, 2).items()}


RESTORATION_HINT = ("use ivedu.intervention.steered_exact_match(lm, prompts, answers, vector, steering) three "
                    "times: with None (the fine-tuned model bare), with the original vector, and with "
                    "random_vector_like(vector, seed) -- a random direction of the same norm, at the same steering: "
                    "the control. It adds the vector at the last prompt token only; wrapping a generation "
                    "in add_to_residual would add it at every generated token too.")


def check_restoration(restore_with_control: Callable, lm=None, prompts=(), answers=(), vector=None,
                      steering: Steering | None = None) -> None:
    """Exercise 3.1: ``restore_with_control(lm, prompts, answers, vector, steering, seed=0) ->
    {"bare": float, "vector": float, "random": float}``, ``lm`` a model under study and ``steering``
    an :class:`ivedu.intervention.Steering`.

    Checked exactly on a damaged copy of the tiny model (a stand-in for a fine-tuned model that
    lost skills) with the original model's vectors, then on the chapter's fine-tuned ``lm``
    and original ``vector`` when given (any profile), within one prompt (:func:`ivedu.exercises.one_in`).
    """
    damaged = tiny_study(perturbed_tiny_model()[0])
    world = tiny_world()
    cases = []
    for name, (layer_, scale_) in (("sentiment", (0, 2.0)), ("bracket", (0, 1.0)), ("sentiment", (1, 4.0))):
        test = instructed_set(world.task(name), "test", fmt=TINY_FORMAT)
        cases.append(Case(f"with a damaged tiny model, the original {name!r} vector in layer {layer_} at scale "
                          f"{scale_}, {name!r} test prompts",
                          (damaged, list(test.prompts), list(test.answers), _original_vectors()[name],
                           Steering(layer_, scale_, "attention"))))
    n = check_against_reference(restore_with_control, restoration_reference, cases, hint=RESTORATION_HINT)
    if lm is not None:
        n += check_against_reference(
            restore_with_control, restoration_reference,
            [Case(f"with the chapter's fine-tuned model and original vector in layer {steering.layer} at scale "
                  f"{steering.scale}", (lm, list(prompts), list(answers), vector, steering))],
            hint=RESTORATION_HINT, atol=one_in(len(prompts)), rtol=0.0)
    passed("restoration and its control", f"{n} cases match ivedu.intervention.steered_exact_match with the vector "
                                          "and with random_vector_like")


def restored_shares_reference(original: dict, finetuned: dict, restored: dict, random: dict) -> tuple[float, float]:
    """Exercise 3.2's reference: ``(share, random_share)`` of the mean loss over tasks."""
    def mean(scores: dict) -> float:
        return float(np.mean([scores[name] for name in original]))

    lost_from = (mean(original), mean(finetuned))
    return restored_share(*lost_from, mean(restored)), restored_share(*lost_from, mean(random))


def check_restored_share(restored_shares: Callable) -> None:
    """Exercise 3.2: ``restored_shares(original, finetuned, restored, random) -> (share, random_share)``.

    Each argument maps task -> exact match (the original model, the fine-tuned one, the
    fine-tuned one with the original vector, with a random vector). The shares are of the
    *means* over tasks: (mean restored - mean fine-tuned) / (mean original - mean fine-tuned),
    NaN where nothing was lost.

    Profile-independent: the function sees only exact-match scores, numbers in [0, 1] that any
    model yields, so the check takes no model; its fixed scores hold every situation a
    profile's scores can (a task that lost nothing, gains, a negative share, nothing lost at all).
    """
    def scores(*values):
        return dict(zip(("a", "b", "c"), values))

    cases = [Case("when the vector gives back half of what was lost and the random vector nothing",
                  (scores(1.0, 1.0, 1.0), scores(0.5, 0.5, 0.5), scores(0.75, 0.75, 0.75), scores(0.5, 0.5, 0.5))),
             Case("when one task lost nothing (a per-task ratio would divide by zero there)",
                  (scores(1.0, 0.8, 0.6), scores(1.0, 0.4, 0.2), scores(1.0, 0.6, 0.5), scores(0.9, 0.4, 0.3))),
             Case("when the random vector makes things worse (a negative share)",
                  (scores(0.9, 0.7, 0.8), scores(0.3, 0.5, 0.2), scores(0.6, 0.6, 0.5), scores(0.2, 0.4, 0.1))),
             Case("when a task improved and another lost (the share is of the means)",
                  (scores(0.4, 1.0, 0.8), scores(0.6, 0.2, 0.8), scores(0.5, 0.9, 0.8), scores(0.6, 0.3, 0.8))),
             Case("when fine-tuning lost nothing on average (NaN: there is nothing to restore)",
                  (scores(0.5, 0.5, 0.5), scores(0.5, 0.6, 0.4), scores(0.7, 0.7, 0.7), scores(0.5, 0.5, 0.5)))]
    n = check_against_reference(
        restored_shares, restored_shares_reference, cases, atol=1e-9,
        hint="average each dict over the tasks first, then share = (restored - finetuned) / (original - finetuned), "
             "the same with the random vector's mean for the control; return float('nan') for both when original - "
             "finetuned <= 0. Averaging per-task shares instead weighs a task that lost little as much as one that "
             "lost everything, and divides by zero where a task lost nothing.")
    passed("share of the loss restored", f"{n} cases match ivedu.dynamics.restored_share of the means")


def _points(seed: int, n: int, noise: float) -> list[TaskAtStage]:
    rng = np.random.default_rng(seed)
    cosine = rng.uniform(0.2, 1.0, n)
    hidden = rng.uniform(0.5, 1.0, n)
    retained = np.clip(0.9 * cosine + rng.normal(0, noise, n), 0, 1)
    return [TaskAtStage(task=f"t{i}", iv_cosine=float(c), heads_jaccard=0.5, effects_correlation=0.5,
                        hidden_cosine=float(h), param_distance=float(1 + i // 3), heads=((0, 0),),
                        if_exact_match=float(r), if_first_token=float(r))
            for i, (c, h, r) in enumerate(zip(cosine, hidden, retained))]


def similarity_r2_reference(points, measure: str) -> float:
    """Exercise 3.3's reference: R² of ``if_exact_match`` on ``measure`` over the points."""
    return r_squared([getattr(p, measure) for p in points], [p.if_exact_match for p in points])


def check_similarity_r2(similarity_r2: Callable) -> None:
    """Exercise 3.3: ``similarity_r2(points, measure) -> float``: the R² of the least-squares line of
    each point's ``if_exact_match`` on its ``measure`` (a field of :class:`ivedu.dynamics.TaskAtStage`).

    Profile-independent: R² is arithmetic on the points' numbers, whatever model they were measured
    on, so the check takes no model; its point sets cover the cases a profile's points can show
    (no relation, a falling line, one value per stage, nothing to explain).
    """
    points = _points(0, 12, 0.1)
    falling = [TaskAtStage(**{**p.__dict__, "param_distance": 2 - p.iv_cosine}) for p in points]
    flat = [TaskAtStage(**{**p.__dict__, "if_exact_match": 0.5}) for p in points]
    cases = [Case("on points that follow the IV cosine with some noise", (points, "iv_cosine")),
             Case("on the same points against the hidden-state cosine (no relation)", (points, "hidden_cosine")),
             Case("against a weight distance that falls as the cosine rises (a falling line)", (falling, "param_distance")),
             Case("against the weight distance, one value per stage", (points, "param_distance")),
             Case("when every point retained the same score (nothing to explain: 0)", (flat, "iv_cosine"))]
    n = check_against_reference(
        similarity_r2, similarity_r2_reference, cases,
        hint="x = [getattr(p, measure) for p in points], y = [p.if_exact_match for p in points]; fit y = a + b x by "
             "least squares (np.polyfit(x, y, 1)), then R² = 1 - (sum of squared residuals) / (sum of squared "
             "deviations of y from its mean) -- the squared Pearson correlation. A falling line explains y as well "
             "as a rising one; where y (or x) does not vary there is nothing to explain: return 0.")
    passed("R² of retained instruction following", f"{n} point sets match ivedu.dynamics.r_squared")


PROJECTION_HINT = ("divide each direction by its own norm first (directions.norm(dim=-1, keepdim=True)), then "
                   "(states * units).sum(-1) gives every state's projection; average over the states (dim -1 of "
                   "that result), keeping one number per layer.")


def check_projection(mean_projection: Callable, states=None, directions=None) -> None:
    """Exercise 3.4: ``mean_projection(states, directions) -> tensor [layers]``: for states
    ``[layers, n, hidden]`` and directions ``[hidden]`` or ``[n, hidden]`` (one per state), the
    mean over the n states of each state's dot product with its *unit* direction.

    Checked on random states, then -- when given -- on the chapter's ``states`` (from
    :func:`ivedu.dynamics.residual_states`) with its ``directions`` (and, for ``[n, hidden]``
    directions, with the first of them alone). A real model's residual stream has a few dimensions of very large size,
    so the absolute tolerance there is ``1e-5`` times the largest state's norm: a dot product
    summed in another order differs by about float32's rounding times that norm.
    """
    generator = torch.Generator().manual_seed(0)
    random_states = torch.randn(3, 5, 8, generator=generator)
    cases = [Case("with one direction of norm 1",
                  (random_states, torch.nn.functional.normalize(torch.randn(8, generator=generator), dim=0))),
             Case("with one direction of norm 7 (normalise it)", (random_states, 7 * torch.randn(8, generator=generator))),
             Case("with one direction per state", (random_states, torch.randn(5, 8, generator=generator)))]
    n = check_against_reference(mean_projection, projections, cases, hint=PROJECTION_HINT)
    if states is not None:
        largest = float(states.float().norm(dim=-1).max())
        chapter = [Case(f"with the chapter's states {list(states.shape)} and its directions {list(directions.shape)}",
                        (states, directions))]
        if directions.dim() == 2:
            chapter.append(Case("with the chapter's states and its first direction for all of them",
                                (states, directions[0])))
        n += check_against_reference(mean_projection, projections, chapter, hint=PROJECTION_HINT,
                                     atol=1e-5 * max(1.0, largest))
    passed("projection on a direction", f"{n} cases match ivedu.dynamics.projections")
