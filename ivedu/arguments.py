"""Checks on what a public function is given: each names the argument, says what is wrong with
the value and how to fix it.

A count of ``0``, a scale of ``nan`` or a list that names a head twice rarely crashes this
method: it quietly gives an empty mean, a ``nan`` score or a head counted twice. The public
functions check their arguments on entry with these few helpers and raise ``TypeError`` (a
value of the wrong kind) or ``ValueError`` (the right kind, out of range, not finite, empty,
repeated) before any work. Each helper returns the value, so a check reads as one line.

This module imports nothing of ``ivedu`` (and ``torch`` only when a tensor is checked), so
that :mod:`ivedu.settings`, at the bottom of the package, can check its dataclasses with it.
:mod:`ivedu.checks` holds the checks on what a model does with its input (context length,
first-token ambiguity, a ``nan`` loss).
"""

from __future__ import annotations

import math
import operator
import os
from numbers import Real
from typing import Any, Mapping, Sequence


def _kind(value: Any) -> str:
    return type(value).__name__


def check_int(name: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an ``int``, if it is a whole number (not a bool, not a float) in
    ``minimum..maximum`` (either bound ``None``: open)."""
    try:
        number = None if isinstance(value, bool) else operator.index(value)  # an int, numpy or 0-d torch integer
    except TypeError:
        number = None
    if number is None:
        example = minimum if minimum is not None else 0
        hint = f"pass e.g. {name}={example}" if name.isidentifier() else f"pass a whole number such as {example}"
        raise TypeError(f"{name} must be a whole number (int), got {value!r} ({_kind(value)}): {hint}")
    value = number
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        if maximum is None:
            span = f"at least {minimum}"
        elif minimum is None:
            span = f"at most {maximum}"
        else:
            span = f"in {minimum}..{maximum}"
        raise ValueError(f"{name} must be {span}, got {value}: pass a whole number {span}")
    return value


def check_positive_int(name: str, value: Any, maximum: int | None = None) -> int:
    """``value`` if it is an ``int`` of at least 1 (a count, a number of steps)."""
    return check_int(name, value, 1, maximum)


def check_optional_positive_int(name: str, value: Any) -> int | None:
    """``value`` if it is ``None`` (no limit) or an ``int`` of at least 1."""
    return None if value is None else check_positive_int(name, value)


def check_seed(name: str, value: Any) -> int:
    """``value`` if it is a non-negative ``int`` (a random seed)."""
    return check_int(name, value, 0)


def check_number(name: str, value: Any, minimum: float | None = None, maximum: float | None = None, *,
                 above: float | None = None, below: float | None = None) -> float:
    """``value`` if it is a finite real number (not a bool) with
    ``minimum <= value <= maximum`` and ``above < value < below`` (each bound ``None``: open)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({_kind(value)}): pass a float or an int")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {number}: pass a float that is not nan or infinite")
    rules = [(sign, bound) for sign, bound in ((">=", minimum), ("<=", maximum), (">", above), ("<", below))
             if bound is not None]
    holds = {">=": number.__ge__, "<=": number.__le__, ">": number.__gt__, "<": number.__lt__}
    if not all(holds[sign](float(bound)) for sign, bound in rules):
        rule = " and ".join(f"{sign} {bound}" for sign, bound in rules)
        raise ValueError(f"{name} must be {rule}, got {number}: pass a number {rule}")
    return value


def check_in_range(name: str, value: Any, lo: float, hi: float) -> float:
    """``value`` if it is a finite number in ``[lo, hi]``."""
    return check_number(name, value, lo, hi)


def check_fraction(name: str, value: Any) -> float:
    """``value`` if it is a finite number strictly between 0 and 1 (a confidence level)."""
    return check_number(name, value, above=0.0, below=1.0)


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """``value`` if it is one of ``choices``."""
    try:
        known = value in choices
    except TypeError:  # an unhashable value against a dict's keys or a set
        known = False
    if not known:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def check_str(name: str, value: Any, nonempty: bool = True) -> str:
    """``value`` if it is a ``str`` (and, with ``nonempty``, not blank)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {value!r} ({_kind(value)})")
    if nonempty and not value.strip():
        raise ValueError(f"{name} must not be empty or blank, got {value!r}")
    return value


def check_path(name: str, value: Any) -> str | os.PathLike:
    """``value`` if it is a file or folder path: a non-blank ``str`` or an ``os.PathLike``
    (a :class:`pathlib.Path`)."""
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (a str or a pathlib.Path), got {value!r} ({_kind(value)}): "
                        f"pass e.g. {name}=Path('...')")
    if isinstance(value, str) and not value.strip():
        raise ValueError(f"{name} must not be empty or blank, got {value!r}: pass a path")
    return value


def check_optional_path(name: str, value: Any) -> str | os.PathLike | None:
    """``value`` if it is ``None`` (the default place) or a path (:func:`check_path`)."""
    return None if value is None else check_path(name, value)


def check_bytes(name: str, value: Any) -> bytes:
    """``value`` if it is ``bytes`` (or a ``bytearray``), e.g. a file's contents."""
    if not isinstance(value, (bytes, bytearray)):
        raise TypeError(f"{name} must be bytes, got {_kind(value)}: pass the file's contents, e.g. "
                        f"path.read_bytes() (a str: text.encode())")
    return value


def check_callable(name: str, value: Any) -> Any:
    """``value`` if it can be called (a function)."""
    if not callable(value):
        raise TypeError(f"{name} must be a function (callable), got {value!r} ({_kind(value)})")
    return value


def check_sequence(name: str, value: Any) -> Sequence:
    """``value`` if it is a sized, ordered collection (a list or a tuple, not a str, a set or a
    generator, which would be read once or in no order)."""
    if isinstance(value, (str, bytes, set, frozenset, dict)) or not (hasattr(value, "__len__")
                                                                      and hasattr(value, "__getitem__")):
        raise TypeError(f"{name} must be a list or a tuple, got {_kind(value)}: "
                        f"pass e.g. {name}=[...] (a str counts as a single value, not a list)")
    return value


def check_nonempty(name: str, value: Any, what: str = "item") -> Sequence:
    """``value`` if it is a list or tuple with at least one element."""
    check_sequence(name, value)
    if len(value) == 0:
        raise ValueError(f"{name} is empty: give a non-empty list, at least one {what}")
    return value


def check_unique(name: str, value: Any) -> Sequence:
    """``value`` if it is a list or tuple that names no element twice."""
    check_sequence(name, value)
    seen, repeated = [], []
    for item in value:
        if item in seen and item not in repeated:
            repeated.append(item)
        seen.append(item)
    if repeated:
        raise ValueError(f"{name} repeats {', '.join(map(repr, repeated[:5]))}: give each element once")
    return value


def check_mapping(name: str, value: Any, what: str = "entry", nonempty: bool = True) -> Mapping:
    """``value`` if it is a dict (any mapping), with at least one ``what`` unless ``nonempty``
    is false."""
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a dict, got {_kind(value)}: pass e.g. {name}={{name: value, ...}}")
    if nonempty and len(value) == 0:
        raise ValueError(f"{name} is empty: give a dict with at least one {what}")
    return value


def check_same_length(name_a: str, a: Sequence, name_b: str, b: Sequence) -> None:
    """Raise ``ValueError`` unless ``a`` and ``b`` have as many elements."""
    if len(a) != len(b):
        raise ValueError(f"{name_a} has {len(a)} elements but {name_b} has {len(b)}: give one of {name_b} per "
                         f"element of {name_a}")


def check_ints(name: str, value: Any, minimum: int | None = None, maximum: int | None = None, *,
               nonempty: bool = True, unique: bool = True) -> tuple[int, ...]:
    """``value`` as a tuple of ``int``, if it is a list or tuple of whole numbers in
    ``minimum..maximum`` (non-empty, each once, unless told otherwise)."""
    (check_nonempty if nonempty else check_sequence)(name, value)
    out = tuple(check_int(f"{name}[{i}]", item, minimum, maximum) for i, item in enumerate(value))
    if unique:
        check_unique(name, out)
    return out


def check_numbers(name: str, value: Any, minimum: float | None = None, *, above: float | None = None,
                  nonempty: bool = True, unique: bool = True) -> Sequence:
    """``value`` if it is a list or tuple of finite real numbers, each ``>= minimum`` and
    ``> above`` (non-empty, each once, unless told otherwise)."""
    (check_nonempty if nonempty else check_sequence)(name, value)
    for i, item in enumerate(value):
        check_number(f"{name}[{i}]", item, minimum, above=above)
    if unique:
        check_unique(name, [float(v) for v in value])
    return value


def check_strs(name: str, value: Any, *, nonempty: bool = True, unique: bool = False) -> Sequence[str]:
    """``value`` if it is a list or tuple of ``str`` (non-empty unless told otherwise; each once
    with ``unique``)."""
    (check_nonempty if nonempty else check_sequence)(name, value)
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise TypeError(f"{name}[{i}] must be a str, got {item!r} ({_kind(item)}): give {name} as a list of str")
    if unique:
        check_unique(name, value)
    return value


def check_tensor(name: str, value: Any, ndim: int | tuple[int, ...] | None = None, *,
                 floating: bool = False, finite: bool = True, nonempty: bool = True):
    """``value`` if it is a ``torch.Tensor`` with ``ndim`` dimensions (one of them, for a tuple),
    of a floating-point dtype (with ``floating``), with no ``nan`` or infinite entry (with
    ``finite``) and at least one element (with ``nonempty``)."""
    import torch  # not at the top: ivedu.settings imports this module and must stay light

    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {_kind(value)}: pass torch.tensor(...)")
    dims = (ndim,) if isinstance(ndim, int) else ndim
    if dims is not None and value.dim() not in dims:
        raise ValueError(f"{name} must have {' or '.join(map(str, dims))} dimension(s), got shape "
                         f"{list(value.shape)}")
    if floating and not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {value.dtype}: pass {name}.float()")
    if nonempty and value.numel() == 0:
        raise ValueError(f"{name} is empty (shape {list(value.shape)}): give a tensor with at least one element")
    if finite:
        check_finite(name, value)
    return value


def check_finite(name: str, value: Any):
    """``value`` (a tensor, a number or a sequence of numbers) if none of its entries is ``nan``
    or infinite."""
    import torch

    if isinstance(value, torch.Tensor):
        bad = ~torch.isfinite(value) if value.is_floating_point() or value.is_complex() else None
        if bad is not None and bool(bad.any()):
            raise ValueError(f"{name} holds {int(bad.sum())} nan or infinite entries (first at index "
                             f"{tuple(int(i) for i in bad.nonzero()[0])}): drop or fix them first")
        return value
    values = [value] if isinstance(value, Real) else list(value)
    bad = [i for i, v in enumerate(values) if not math.isfinite(float(v))]
    if bad:
        raise ValueError(f"{name} holds {len(bad)} nan or infinite entries (first at index {bad[0]}): "
                         "drop or fix them first")
    return value


def check_prompts(prompts: Any, answers: Any = None, answers_name: str = "answers") -> None:
    """Raise unless ``prompts`` is a non-empty list of ``str`` and ``answers`` (when given; called
    ``answers_name``) a list of ``str`` with one answer per prompt."""
    check_sequence("prompts", prompts)
    if len(prompts) == 0:
        raise ValueError("no prompts given: prompts is empty; give at least one prompt")
    check_strs("prompts", prompts)
    blank = [i for i, prompt in enumerate(prompts) if not prompt.strip()]
    if blank:
        raise ValueError(f"prompts[{blank[0]}] is blank: every prompt needs at least one token")
    if answers is not None:
        check_strs(answers_name, answers, nonempty=False)
        if len(answers) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(answers)} {answers_name}: give one answer per prompt")
