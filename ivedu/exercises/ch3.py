"""Checkers for chapter 3's exercises: how far fine-tuning moved a model, and what that explains.

- Exercise 3.1, :func:`check_parameter_distance`: the L2 distance between two models' weights
  (reference: :func:`ivedu.dynamics.parameter_distance`).
- Exercise 3.2, :func:`check_r_squared`: the R² of a straight-line fit
  (reference: :func:`ivedu.dynamics.r_squared`).
- Exercise 3.3, :func:`check_projection`: the mean projection of hidden states on unit
  directions, per layer -- the overlay read-out (reference: :func:`ivedu.dynamics.projections`).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ivedu.dynamics import parameter_distance, projections, r_squared
from ivedu.exercises import Case, check_against_reference, passed, perturbed_tiny_model, tiny_model


def check_parameter_distance(distance: Callable) -> None:
    """Exercise 3.1: ``distance(original, finetuned) -> float``, the L2 norm of the difference
    of all weights (every parameter, matched by name), as one number."""
    model, _ = tiny_model()
    damaged, _ = perturbed_tiny_model()
    cases = [Case("between the tiny model and itself", (model, model)),
             Case("between the tiny model and a damaged copy", (model, damaged)),
             Case("between the damaged copy and the tiny model (order swapped)", (damaged, model))]
    n = check_against_reference(
        distance, parameter_distance, cases, rtol=1e-4,
        hint="square the difference of each pair of parameters with the same name "
             "(dict(finetuned.named_parameters())), sum over ALL parameters, and take one square root at "
             "the end -- not one per parameter.")
    passed("parameter distance", f"{n} pairs of models match ivedu.dynamics.parameter_distance")


def check_r_squared(fit_r2: Callable) -> None:
    """Exercise 3.2: ``fit_r2(x, y) -> float``, the share of y's variance explained by the
    least-squares line through the points (x, y)."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, 30)
    cases = [Case("on points exactly on a rising line", ([0.0, 1.0, 2.0, 3.0], [1.0, 3.0, 5.0, 7.0])),
             Case("on points exactly on a falling line", ([0.0, 1.0, 2.0, 3.0], [7.0, 5.0, 3.0, 1.0])),
             Case("on noisy points around a line", (x.tolist(), (2 * x + rng.normal(0, 0.3, 30)).tolist())),
             Case("on points with no linear trend", ([0.0, 1.0, 2.0, 3.0], [1.0, 0.0, 0.0, 1.0]))]
    n = check_against_reference(
        fit_r2, r_squared, cases,
        hint="fit y = a + b x by least squares (np.polyfit(x, y, 1)), then R² = 1 - (sum of squared "
             "residuals) / (sum of squared deviations of y from its mean); for a straight-line fit it also "
             "equals the squared Pearson correlation. A falling line explains y as well as a rising one.")
    passed("R²", f"{n} point sets match ivedu.dynamics.r_squared")


def check_projection(mean_projection: Callable) -> None:
    """Exercise 3.3: ``mean_projection(states, directions) -> tensor [layers]``: for states
    ``[layers, n, hidden]`` and directions ``[hidden]`` or ``[n, hidden]`` (one per state), the
    mean over the n states of each state's dot product with its *unit* direction."""
    generator = torch.Generator().manual_seed(0)
    states = torch.randn(3, 5, 8, generator=generator)
    cases = [Case("with one direction of norm 1", (states, torch.nn.functional.normalize(torch.randn(8, generator=generator), dim=0))),
             Case("with one direction of norm 7 (normalise it)", (states, 7 * torch.randn(8, generator=generator))),
             Case("with one direction per state", (states, torch.randn(5, 8, generator=generator)))]
    n = check_against_reference(
        mean_projection, projections, cases,
        hint="divide each direction by its own norm first (directions.norm(dim=-1, keepdim=True)), then "
             "(states * units).sum(-1) gives every state's projection; average over the states (dim -1 of "
             "that result), keeping one number per layer.")
    passed("projection on a direction", f"{n} cases match ivedu.dynamics.projections")
