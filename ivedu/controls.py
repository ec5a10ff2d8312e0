"""Shortcut controls: what an intervention must beat before it counts as carrying a task.

A vector that pushes one label can score well on a task whose answers are mostly that label:
on a sentiment test set that is 82% positive, answering "positive" to every review scores
0.82 without reading any review. So an effect is judged against the cheapest ways to score:

- the **constant answer** (:func:`constant_answer`): always answering the train split's most
  frequent gold answer; its score (:func:`constant_score`) is the floor of any predictor that
  ignores the input;
- **balanced accuracy** (:func:`balanced_accuracy`): the mean per-answer recall, on which the
  constant predictor scores ``1 / n_answers`` however skewed the answers are;
- the **starts-right share** (:func:`starts_right_share`): answers whose first token is right
  but whose whole answer is not, the gap between the first-token metric and exact match;
- **bootstrap intervals** (:func:`bootstrap_interval`, :func:`paired_bootstrap_interval`,
  :func:`grouped_bootstrap_interval`): how far an effect measured on a few dozen examples per
  task could move on other draws of them.

Everything here is plain arithmetic on answers and flags: no model, so the controls can be
tested by hand.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ivedu.arguments import check_fraction, check_positive_int, check_seed, check_sequence, check_str
from ivedu.evaluation import FEW_ANSWERS, balanced_accuracy, normalise_answer, starts_right_share  # noqa: F401
from ivedu.world import Task

@dataclass(frozen=True)
class Effect:
    """An effect with its percentile-bootstrap interval: ``value`` the point estimate,
    ``interval`` ``(low, high)`` at ``level`` (e.g. 0.95)."""

    value: float
    interval: tuple[float, float]
    level: float = 0.95


def constant_answer(task: Task) -> str:
    """The task's most frequent gold answer on its train split, normalised
    (:func:`ivedu.evaluation.normalise_answer`); ties go to the first in sorted order.

    Chosen on train, so that scoring it on valid or test is a fair control, not a peek."""
    golds = [normalise_answer(ex.output) for ex in task.split("train")]
    if not golds:
        raise ValueError(f"task {task.name!r} has no train examples to read its constant answer from")
    counts = Counter(golds)
    top = max(counts.values())
    return min(answer for answer, n in counts.items() if n == top)


def constant_score(task: Task, split: str) -> float:
    """Exact match of always answering :func:`constant_answer` on ``split`` of ``task``."""
    golds = [ex.output for ex in task.split(split)]
    if not golds:
        raise ValueError(f"task {task.name!r} has no examples in split {split!r}")
    return constant_exact_match(constant_answer(task), golds)


def constant_exact_match(answer: str, golds: Sequence[str]) -> float:
    """Exact match of answering ``answer`` to every one of ``golds`` (both normalised)."""
    check_str("answer", answer, nonempty=False)
    check_sequence("golds", golds)
    if not golds:
        raise ValueError("no gold answers given")
    return sum(normalise_answer(g) == normalise_answer(answer) for g in golds) / len(golds)


def _values(values: Sequence[float], what: str = "values") -> np.ndarray:
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{what} must be a flat sequence of numbers, got a {type(values).__name__}")
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{what} must be a flat sequence of numbers ({err}): pass a list of floats") from None
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"no {what} to bootstrap: give a non-empty flat sequence of numbers")
    if np.isnan(array).any():
        raise ValueError(f"{what} contain NaN: drop or fill them before bootstrapping")
    if np.isinf(array).any():
        raise ValueError(f"{what} contain an infinite value: drop or fix it before bootstrapping")
    return array


def _check_level(level: float, n: int, seed: int = 0) -> None:
    check_fraction("level", level)
    check_positive_int("n", n)
    check_seed("seed", seed)


def _resampled_means(array: np.ndarray, n: int, rng: np.random.Generator, chunk: int = 256) -> np.ndarray:
    """``[n]`` means of ``array`` resampled with replacement (in chunks, to bound memory)."""
    out = np.empty(n)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        out[start:stop] = array[rng.integers(0, array.size, size=(stop - start, array.size))].mean(1)
    return out


def _percentiles(means: np.ndarray, level: float) -> tuple[float, float]:
    low, high = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(low), float(high)


def bootstrap_interval(values: Sequence[float], n: int = 2000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of ``values``: ``(low, high)`` at ``level``.

    ``n`` resamples with replacement, drawn with numpy's generator seeded by ``seed``, so the
    interval repeats exactly."""
    _check_level(level, n, seed)
    array = _values(values)
    return _percentiles(_resampled_means(array, n, np.random.default_rng(seed)), level)


def paired_bootstrap_interval(a: Sequence[float], b: Sequence[float], n: int = 2000, seed: int = 0,
                              level: float = 0.95) -> tuple[float, float]:
    """Percentile-bootstrap interval of ``mean(a - b)``, resampling the pairs ``(a[i], b[i])``
    together (two scores of the same example are not independent)."""
    _check_level(level, n, seed)
    first, second = _values(a, "a"), _values(b, "b")
    if first.size != second.size:
        raise ValueError(f"paired samples differ in length: {first.size} and {second.size}")
    return bootstrap_interval(first - second, n, seed, level)


def grouped_bootstrap_interval(groups: Sequence[Sequence[float]], n: int = 2000, seed: int = 0,
                               level: float = 0.95) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of the groups' means, each group resampled
    within itself: a mean over tasks, each task weighted equally whatever its test size."""
    _check_level(level, n, seed)
    check_sequence("groups", groups)
    if not groups:
        raise ValueError("no groups to bootstrap")
    rng = np.random.default_rng(seed)
    means = np.mean([_resampled_means(_values(g, "group values"), n, rng) for g in groups], axis=0)
    return _percentiles(means, level)
