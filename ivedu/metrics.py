"""Continual-learning metrics from an accuracy matrix ``R[stage, task]``.

``R`` is square, ``[T, T]``: ``R[t, i]`` is the score on task ``i`` after training on tasks
``0 .. t`` in order (row ``t`` is measured right after stage ``t``). Entries above the diagonal
(tasks not trained yet) are allowed -- they are measured zero-shot -- and only
:func:`forward_transfer` reads them. Scores are in ``[0, 1]`` (exact match here).

Papers name and normalise these numbers differently; each function says which paper's
definition it follows:

- **OP** (overall performance, TRACE, Wang et al. 2023): mean over the tasks trained so
  far, at a stage. At the last stage it equals GEM's ACC and the FV paper's FP.
- **AP** (average performance right after training each task, the function-vector
  paper, Jiang et al. 2025): the diagonal mean, i.e. plasticity.
- **FP** (final performance, FV paper): the last row's mean.
- **BWT** (backward transfer) in two conventions, which differ only in the denominator:

  - ``"gem"`` -- Lopez-Paz & Ranzato (2017), *Gradient Episodic Memory*:
    ``BWT = 1/(T-1) * sum_{i<T-1} (R[T-1, i] - R[i, i])``, the mean over the tasks that
    *can* be forgotten (the last one cannot);
  - ``"trace"`` -- TRACE (Wang et al. 2023): ``BWT = 1/T * sum_{i<=T-1} (R[T-1, i] - R[i, i])``;
    the last task contributes 0, so this is the GEM value times ``(T-1)/T``. It equals
    ``FP - AP``, i.e. minus the FV paper's "Forget".

  Negative BWT means forgetting. The two agree in sign and ordering between methods on the
  same ``T``; compare numbers across papers only within one convention.
- **Forgetting** (Chaudhry et al. 2018, *Riemannian Walk*): for each task but the last, its
  best score at any earlier stage minus its final score, averaged. Unlike BWT it does not
  credit a task for having been low right after training.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ivedu.arguments import check_choice, check_finite, check_int

BWT_CONVENTIONS = ("gem", "trace")


def _square(R, stage: int | None = None) -> np.ndarray:
    """``R`` as a float array, cut to the first ``stage + 1`` stages and tasks (a negative
    ``stage`` counts from the last, as an index does)."""
    R = _floats("R", R)
    if R.ndim != 2 or R.shape[0] != R.shape[1]:
        raise ValueError(f"R must be square [stages, tasks] (one stage per task), got shape {R.shape}")
    if R.shape[0] == 0:
        raise ValueError("R is empty")
    check_finite("R", R.ravel().tolist())
    if stage is not None:
        check_int("stage", stage, -R.shape[0], R.shape[0] - 1)
        t = stage % R.shape[0]
        R = R[: t + 1, : t + 1]
    return R


def _floats(name: str, values) -> np.ndarray:
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{name} must be numbers (a list of lists or an array), got a {type(values).__name__}")
    try:
        return np.asarray(values, dtype=float)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be numbers (a list of lists or an array): {err}") from None


def overall_performance(R, stage: int | None = None) -> float:
    """OP at ``stage`` (default: the last), TRACE's convention: ``mean_{i<=t} R[t, i]``."""
    R = _square(R, stage)
    return float(R[-1].mean())


def average_performance(R, stage: int | None = None) -> float:
    """AP, FV paper's convention: ``mean_i R[i, i]``, each task right after its own stage."""
    return float(np.diag(_square(R, stage)).mean())


def final_performance(R, stage: int | None = None) -> float:
    """FP, FV paper's convention: ``mean_i R[T-1, i]`` (equals OP at the last stage)."""
    return overall_performance(R, stage)


def backward_transfer(R, convention: str = "gem", stage: int | None = None) -> float:
    """BWT at ``stage`` (default: the last) in the ``"gem"`` or ``"trace"`` convention.

    ``"gem"``: ``1/(T-1) sum_{i<T-1} (R[T-1,i] - R[i,i])`` (Lopez-Paz & Ranzato 2017);
    ``"trace"``: ``1/T sum_{i<=T-1} (R[T-1,i] - R[i,i])`` (Wang et al. 2023). With one task
    there is nothing to forget: both return 0.
    """
    check_choice("convention", convention, BWT_CONVENTIONS)
    R = _square(R, stage)
    T = R.shape[0]
    if T == 1:
        return 0.0
    drops = R[-1, :-1] - np.diag(R)[:-1]
    return float(drops.sum() / (T - 1 if convention == "gem" else T))


def forgetting(R, stage: int | None = None) -> float:
    """Average forgetting (Chaudhry et al. 2018): ``mean_{i<T-1} max_{l<T-1} (R[l,i]) - R[T-1,i]``.

    The max runs over stages ``i .. T-2`` (after the task was trained, before the last
    stage). 0 with one task. Positive means forgetting (the opposite sign to BWT).
    """
    R = _square(R, stage)
    T = R.shape[0]
    if T == 1:
        return 0.0
    best = np.array([R[i:T - 1, i].max() for i in range(T - 1)])
    return float((best - R[-1, :-1]).mean())


def forward_transfer(R, baseline: Sequence[float]) -> float:
    """FWT (Lopez-Paz & Ranzato 2017): ``1/(T-1) sum_{i>=1} (R[i-1, i] - baseline[i])``.

    How much training on earlier tasks helps a task before it is trained, against the
    model's ``baseline[i]`` score before any fine-tuning. 0 with one task.
    """
    R = _square(R)
    b = _floats("baseline", baseline)
    if b.shape != (R.shape[0],):
        raise ValueError(f"baseline must have one score per task ({R.shape[0]}), got shape {b.shape}")
    check_finite("baseline", b.tolist())
    T = R.shape[0]
    if T == 1:
        return 0.0
    return float(np.mean([R[i - 1, i] - b[i] for i in range(1, T)]))


def continual_metrics(R, baseline: Sequence[float] | None = None) -> dict[str, float]:
    """Every metric above at the last stage, as a dict (BWT in both conventions)."""
    out = {
        "OP": overall_performance(R),
        "AP": average_performance(R),
        "FP": final_performance(R),
        "BWT_gem": backward_transfer(R, "gem"),
        "BWT_trace": backward_transfer(R, "trace"),
        "forgetting": forgetting(R),
    }
    if baseline is not None:
        out["FWT"] = forward_transfer(R, baseline)
    return out
