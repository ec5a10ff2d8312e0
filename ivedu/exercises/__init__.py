"""Checkers for the book's exercises: compare a learner's function with ivedu's own.

Every exercise in a chapter is four cells (see ``book/teachers.md``): a markdown cell that says
what to do and how long it takes, a *stub* code cell tagged ``exercise`` (signature, docstring,
``raise NotImplementedError("your code here")``), a *solution* cell tagged ``solution`` and
``hide-input`` (dropped from the student notebooks), and a *check* cell, e.g.::

    from ivedu.exercises.ch1 import check_knowledge_score
    check_knowledge_score(knowledge_ranking)

A checker (one per exercise, in ``ivedu.exercises.chN``) runs the learner's function and the
reference -- the ivedu function the chapter itself uses -- on a few small inputs, prints one
success line, and raises :class:`ExerciseError` on a wrong answer, saying on which input, what
differed, and giving a hint. This module holds what every checker shares:

- :class:`ExerciseError`, an ``AssertionError``, so a failed check reads like a failed test;
- :func:`call_learner`, which turns "still a stub" (``NotImplementedError``) and crashes into
  a clear message;
- :func:`compare`, which compares numbers, tensors, arrays, sequences and dicts with a
  tolerance and says where they differ;
- :func:`check_against_reference`, the loop over :class:`Case` inputs that most checkers are;
- :func:`passed`, the success line;
- :func:`without_leftover_hooks`, which removes and reports hooks a learner's function forgot to detach;
- :func:`one_in`, :func:`rounding_rtol` and :func:`first_examples`, for the cases a checker adds
  on the chapter's own model (any profile): a tolerance of one example, a tolerance of the
  model's dtype, and a task cut to a few examples;
- :func:`tiny_model` and :func:`tiny_world`, the shipped tiny model and its world, loaded once
  per process, so a check takes a second or two whatever model the chapter runs on (and
  :func:`tiny_study`, it or a copy as a model under study, with the tiny format), and
  :func:`perturbed_tiny_model`, a damaged copy whose
  mistakes expose answers that are right only on a near-perfect model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, is_dataclass
from functools import lru_cache
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

__all__ = ["ExerciseError", "Case", "call_learner", "compare", "check_against_reference", "passed",
           "tiny_model", "tiny_world", "perturbed_tiny_model", "without_leftover_hooks", "one_in",
           "first_examples", "CHAPTER_EXAMPLES", "rounding_rtol"]


class ExerciseError(AssertionError):
    """The learner's answer is wrong (or not written yet); the message says what differed and why."""


@dataclass(frozen=True)
class Case:
    """One input to try a learner's function on: positional and keyword arguments and a label.

    ``label`` names the input in messages ("on the 'capital' task, heldout split"), so the
    learner knows which input to debug with.
    """

    label: str
    args: tuple = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)


def _name(fn: Callable) -> str:
    return getattr(fn, "__name__", repr(fn))


def call_learner(fn: Callable, *args: Any, label: str = "", **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, with a learner-friendly :class:`ExerciseError` if it fails.

    A ``NotImplementedError`` means the stub has not been filled in yet; any other exception
    is re-raised as an :class:`ExerciseError` naming the input (``label``) and the original
    error, which stays attached as the cause for the full traceback.
    """
    if not callable(fn):
        raise ExerciseError(f"expected a function, got {type(fn).__name__}: pass the function itself, "
                            "e.g. check(my_function), not check(my_function(...))")
    where = f" {label}" if label else ""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError as err:
        raise ExerciseError(f"`{_name(fn)}` still raises NotImplementedError: replace the line "
                            "`raise NotImplementedError(...)` with your code, run that cell again, "
                            "then run this check.") from err
    except ExerciseError:
        raise
    except Exception as err:  # the learner's bug, whatever it is: report it with the input
        raise ExerciseError(f"`{_name(fn)}` raised {type(err).__name__}{where}: {err}") from err


def _as_array(x: Any) -> np.ndarray | None:
    """``x`` as a float array if it is a tensor or array, else ``None``."""
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x.astype(float)
    return None


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def compare(got: Any, expected: Any, what: str = "the result", *, atol: float = 1e-5,
            rtol: float = 1e-4) -> None:
    """Raise :class:`ExerciseError` unless ``got`` equals ``expected`` (numbers within tolerance).

    Handles numbers (a 0-d tensor counts as a number), tensors and arrays (shape first, then
    values; the message gives the largest difference and where), sequences, dicts and
    dataclasses (recursively, naming the element that differs) and anything comparable with
    ``==``. ``what`` names the value in the message.
    """
    if isinstance(got, torch.Tensor) and got.dim() == 0:
        got = got.item()
    if isinstance(expected, torch.Tensor) and expected.dim() == 0:
        expected = expected.item()
    if _is_number(expected):
        if isinstance(got, bool) or not _is_number(got):
            raise ExerciseError(f"{what} should be a number like {expected!r}, got {type(got).__name__} {got!r}")
        if not (math.isclose(float(got), float(expected), rel_tol=rtol, abs_tol=atol)
                or (math.isnan(float(got)) and math.isnan(float(expected)))):
            raise ExerciseError(f"{what} is {float(got):.6g}, expected {float(expected):.6g}")
        return
    want = _as_array(expected)
    if want is not None:
        have = _as_array(got)
        if have is None:
            raise ExerciseError(f"{what} should be a tensor of shape {list(want.shape)}, got {type(got).__name__}")
        if have.shape != want.shape:
            raise ExerciseError(f"{what} has shape {list(have.shape)}, expected {list(want.shape)}")
        if not np.allclose(have, want, rtol=rtol, atol=atol, equal_nan=True):
            diff = np.abs(have - want)
            diff = np.where(np.isnan(diff), np.inf, diff)
            where = np.unravel_index(int(diff.argmax()), diff.shape)
            raise ExerciseError(f"{what} differs from the expected values: largest difference "
                                f"{float(diff[where]):.4g} at index {list(map(int, where))} "
                                f"(got {float(have[where]):.6g}, expected {float(want[where]):.6g})")
        return
    if is_dataclass(expected) and not isinstance(expected, type):
        if type(got) is not type(expected):
            raise ExerciseError(f"{what} should be a {type(expected).__name__}, got {type(got).__name__}")
        for f in fields(expected):
            compare(getattr(got, f.name), getattr(expected, f.name), f"{what}.{f.name}", atol=atol, rtol=rtol)
        return
    if isinstance(expected, Mapping):
        if not isinstance(got, Mapping):
            raise ExerciseError(f"{what} should be a dict, got {type(got).__name__}")
        if set(got) != set(expected):
            raise ExerciseError(f"{what} has keys {sorted(map(str, got))}, expected {sorted(map(str, expected))}")
        for key in expected:
            compare(got[key], expected[key], f"{what}[{key!r}]", atol=atol, rtol=rtol)
        return
    if isinstance(expected, (list, tuple)):
        if isinstance(got, (str, bytes)) or not isinstance(got, Sequence):
            raise ExerciseError(f"{what} should be a list of {len(expected)} items, got {type(got).__name__}")
        if len(got) != len(expected):
            raise ExerciseError(f"{what} has {len(got)} items, expected {len(expected)}")
        for i, (g, e) in enumerate(zip(got, expected)):
            compare(g, e, f"{what}[{i}]", atol=atol, rtol=rtol)
        return
    if got != expected:
        raise ExerciseError(f"{what} is {got!r}, expected {expected!r}")


def check_against_reference(learner: Callable, reference: Callable, cases: Sequence[Case], *,
                            hint: str = "", atol: float = 1e-5, rtol: float = 1e-4) -> int:
    """Run ``learner`` and ``reference`` on every case and :func:`compare` the results.

    Raises :class:`ExerciseError` at the first case that differs, naming the case and adding
    ``hint``. Returns the number of cases checked (for the success line).
    """
    if not cases:
        raise ValueError("no cases given: a check needs at least one input")
    for case in cases:
        expected = reference(*case.args, **dict(case.kwargs))
        got = call_learner(learner, *case.args, label=case.label, **dict(case.kwargs))
        try:
            compare(got, expected, "the result", atol=atol, rtol=rtol)
        except ExerciseError as err:
            raise ExerciseError(f"`{_name(learner)}` {case.label}: {err}." + (f"\nHint: {hint}" if hint else "")) from None
    return len(cases)


def one_in(n: int) -> float:
    """The tolerance of a share of ``n`` items on the chapter's own model: just over one item.

    On a real model the learner's batching (one prompt at a time, other padding) can change a
    logit in its last digits and so flip a near-tie: an answer or a ranking of one example.
    A check on the chapter's model therefore allows one item of difference in a share of
    ``n``; the tiny model's cases, which catch the mistakes, stay exact.
    """
    return 1.0 / max(1, n) + 1e-9


def rounding_rtol(model: torch.nn.Module, rtol: float = 1e-4) -> float:
    """The relative tolerance of a value computed from ``model``'s weights: ``rtol``, or two
    roundings of the weights' dtype where that is coarser.

    A reference that multiplies in the model's dtype and a learner who casts to float32 first
    (or the other way round) agree to float32 precision on a float32 model (tiny, smol), but
    only to the dtype's rounding on a 16-bit one: about ``4e-3`` relative in bfloat16 (the
    paper profile), ``5e-4`` in float16 (Colab's T4). Returns ``max(rtol, 2 * eps)`` of the dtype.
    """
    dtype = next(model.parameters()).dtype
    return max(rtol, 2 * torch.finfo(dtype).eps) if dtype.is_floating_point else rtol


# Examples per split of each task a check runs on the chapter's own model: enough for a wrong
# score to show, few enough that the check takes seconds on a CPU profile (smol).
CHAPTER_EXAMPLES = 12


def first_examples(task, n: int = CHAPTER_EXAMPLES):
    """``task`` (an :class:`ivedu.world.Task`) with only its first ``n`` examples in each split.

    A check on the chapter's model runs the learner's function and the reference on the same
    cut task, so it costs the same few seconds on every profile, whatever the size of the
    profile's datasets.
    """
    import dataclasses

    return dataclasses.replace(task, train=task.train[:n], valid=task.valid[:n], test=task.test[:n])


def passed(name: str, detail: str = "") -> None:
    """Print the one-line success message of a check."""
    print(f"✔ {name}: correct" + (f" ({detail})" if detail else "") + ".")


@lru_cache(maxsize=1)
def tiny_model():
    """``(model, tokenizer)`` of the shipped tiny model, loaded once per process (checkers share it)."""
    import ivedu

    model, tokenizer = ivedu.load_model("tiny")
    model.eval()
    return model, tokenizer


def tiny_study(model: torch.nn.Module | None = None):
    """The shipped tiny model -- or ``model``, e.g. :func:`perturbed_tiny_model`'s copy -- as a
    model under study (:class:`ivedu.study.ModelUnderStudy`), with the tiny tokenizer and format."""
    from ivedu.prompts import TINY_FORMAT
    from ivedu.study import ModelUnderStudy

    tiny, tokenizer = tiny_model()
    return ModelUnderStudy(tiny if model is None else model, tokenizer, TINY_FORMAT, "tiny")


@lru_cache(maxsize=1)
def tiny_world():
    """The tiny model's world (seed 0), built once per process."""
    import ivedu

    return ivedu.build_world(0)


@lru_cache(maxsize=2)
def perturbed_tiny_model(noise: float = 0.3, seed: int = 0):
    """A copy of the tiny model with Gaussian noise on every weight matrix, loaded once per setting.

    The shipped model is nearly perfect on its own tasks, so a learner's score that ignores a
    detail (a tie, a second instruction phrasing) can still come out right on it. A damaged
    copy -- noise of ``noise`` times each matrix's standard deviation -- makes mistakes, and
    the checkers compare on it too. Returns ``(model, tokenizer)``; the shipped model is untouched.
    """
    if noise < 0:
        raise ValueError(f"noise must be >= 0 (a fraction of each weight's standard deviation), got {noise}")
    import copy

    model, tokenizer = tiny_model()
    damaged = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in damaged.parameters():
            if param.dim() >= 2:
                param.add_(torch.randn(param.shape, generator=generator) * param.std() * noise)
    return damaged.eval(), tokenizer


def _hook_ids(model: torch.nn.Module) -> dict[str, set[int]]:
    """The ids of every forward (pre-)hook attached to each module of ``model``."""
    return {name: set(module._forward_hooks) | set(module._forward_pre_hooks)
            for name, module in model.named_modules()}


def without_leftover_hooks(learner: Callable, model: torch.nn.Module) -> Callable:
    """``learner`` wrapped so that hooks it leaves on ``model`` are removed and reported.

    A hook that stays attached silently changes every later forward pass (and every later
    check). The wrapper removes any hook the call added and, if the call otherwise succeeded,
    raises :class:`ExerciseError` saying how to detach hooks.
    """
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        before = _hook_ids(model)
        ok = False
        try:
            result = learner(*args, **kwargs)
            ok = True
            return result
        finally:
            left = []
            for name, module in model.named_modules():
                for hooks in (module._forward_hooks, module._forward_pre_hooks):
                    for hook_id in set(hooks) - before.get(name, set()):
                        del hooks[hook_id]
                        left.append(name or "the model")
            if left and ok:
                raise ExerciseError(f"`{_name(learner)}` left a hook attached to {left[0]!r}: keep the handle "
                                    "that register_forward_hook returns and call handle.remove() in a "
                                    "`finally:` block (or use a `with` block from ivedu.hooks).")

    wrapped.__name__ = _name(learner)
    return wrapped
