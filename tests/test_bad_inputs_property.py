"""Malformed input to the public API gets an error that names the argument, or a correct result.

Each case below is one public function with valid arguments and, per argument, a strategy that
draws values of every kind (wrong types, negative, zero and huge numbers, ``nan`` and infinities,
empty and repeated lists, tensors of the wrong shape, layers and heads out of range) together
with the rule that says which of them the function documents as valid. Hypothesis corrupts one
argument at a time. A valid value must give a correct result (the case's ``result_ok``); any
other must raise ``TypeError`` or ``ValueError`` (``IndexError`` for a layer or head index, the
package's error for those) whose message names the argument.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import ivedu
from ivedu import settings as S
from ivedu.continual import KINDS, Method, MethodScores
from ivedu.continual import format_summary as continual_format_summary
from ivedu.continual import summarise as continual_summarise
from ivedu.controls import bootstrap_interval, grouped_bootstrap_interval
from ivedu.corpus import Mixture, TrainingSequence, collate, instructed_sequence, statement_sequence
from ivedu.costs import GpuSpec, Shape, Workload, lora_parameters, model_config, roofline_seconds
from ivedu.datasets import dataset_url, parse_pairs, sha256_of
from ivedu.diagnosis import DiagnosisRun
from ivedu.diagnosis import summarise as diagnosis_summarise
from ivedu.dynamics import cosine, jaccard, projections, r_squared, restored_share, watch_training
from ivedu.evaluation import demonstrations, exact_match
from ivedu.facts import NOUNS
from ivedu.extraction import build_vectors, clean_prompts
from ivedu.generation import batches, greedy_generate
from ivedu.guided import kd_loss, progressive_weight
from ivedu.hooks import add_to_residual
from ivedu.intervention import Steering, instruction_vector, random_vector_like
from ivedu.mediation import HeadScan, mean_head_activations
from ivedu.evaluation import AbilityScores
from ivedu.metrics import backward_transfer, forward_transfer
from ivedu.plots import plot_loss_curve, plot_r_matrix
from ivedu.prompts import TINY_FORMAT, neutral_prompt
from ivedu.results import format_seconds, markdown_table, result_path
from ivedu.scorecard import Check, Verdict, judge, scorecard_markdown
from ivedu.world import custom_task

ERRORS = (TypeError, ValueError, IndexError)

# ---------------------------------------------------------------------------- values of every kind

OTHER = st.one_of(st.none(), st.booleans(), st.text(max_size=3), st.just([1, 2]), st.just({"a": 1}),
                  st.just(object()))
FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=64)
INTS = st.one_of(st.integers(-5, 70), st.sampled_from([-10**12, 10**12, 2**63]))


def any_int(small: st.SearchStrategy = INTS) -> st.SearchStrategy:
    """Whole numbers (small, negative, huge), floats (whole ones too), bools and other kinds."""
    return st.one_of(small, FLOATS, st.just(2.0), OTHER)


def any_float() -> st.SearchStrategy:
    return st.one_of(FLOATS, INTS, OTHER)


def is_int(v: Any, lo: float = -math.inf, hi: float = math.inf) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def is_real(v: Any, lo: float = -math.inf, hi: float = math.inf, above: float | None = None,
            below: float | None = None) -> bool:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return False
    return lo <= v <= hi and (above is None or v > above) and (below is None or v < below)


def float_lists(min_size: int = 0, max_size: int = 6) -> st.SearchStrategy:
    element = st.floats(-1e6, 1e6) | st.sampled_from([math.nan, math.inf, -math.inf]) | st.integers(-3, 3)
    return st.lists(element, min_size=min_size, max_size=max_size)


def is_finite_list(v: Any, min_size: int = 1) -> bool:
    return (isinstance(v, list) and len(v) >= min_size
            and all(is_real(x) for x in v))


def tensors(shapes=((4,), (0,), (2, 3), (4, 4, 32), (3, 4, 32), (4, 4, 31), (128,), (127,))):
    """Tensors of several shapes, float (with ``nan`` and infinities) or integer, and non-tensors."""
    floats = st.floats(-3, 3, width=32) | st.sampled_from([math.nan, math.inf, -math.inf])

    @st.composite
    def draw(d):
        shape = d(st.sampled_from(shapes))
        dtype = d(st.sampled_from([np.float32, np.float32, np.int64]))
        elements = floats if dtype is np.float32 else st.integers(-3, 3)
        return torch.from_numpy(d(arrays(dtype, shape, elements=elements)))

    return st.one_of(draw(), OTHER, st.just([1.0, 2.0]))


def is_tensor(v: Any, shape: tuple | None = None, ndim: tuple | None = None) -> bool:
    return (isinstance(v, torch.Tensor) and v.is_floating_point() and v.numel() > 0
            and bool(torch.isfinite(v).all()) and (shape is None or tuple(v.shape) == shape)
            and (ndim is None or v.dim() in ndim))


def str_lists(min_size: int = 0, max_size: int = 4) -> st.SearchStrategy:
    word = st.sampled_from(["cat", "dog", "cup", " ", ""])
    return st.one_of(st.lists(word, min_size=min_size, max_size=max_size),
                     st.lists(st.integers(), min_size=1, max_size=2), st.text(max_size=3), OTHER)


# ---------------------------------------------------------------------------- the tiny model, once


@cache
def tiny():
    return ivedu.load_model("tiny")


@cache
def world():
    return ivedu.build_world(0)


# ---------------------------------------------------------------------------- the cases


@dataclass
class Case:
    """``call(**valid)`` works; ``args[name] = (strategy, valid)``: the values drawn for ``name`` and
    the rule that says which are valid; ``names[name]``: other words an error may name it by."""

    id: str
    call: Callable[..., Any]
    valid: dict
    args: dict[str, tuple[st.SearchStrategy, Callable[[Any], bool]]]
    result_ok: Callable[[Any], bool] = lambda result: True
    names: dict[str, tuple[str, ...]] = field(default_factory=dict)


def _interval_ok(result) -> bool:
    low, high = result
    return math.isfinite(low) and math.isfinite(high) and low <= high


def _float_array(v) -> np.ndarray | None:
    """``v`` as a float array, or ``None`` when it is text or not a grid of numbers."""
    if isinstance(v, (str, bytes)):
        return None
    try:
        return np.asarray(v, dtype=float)
    except (TypeError, ValueError):
        return None


def _square(v) -> bool:
    array = _float_array(v)
    return (array is not None and array.ndim == 2 and array.shape[0] == array.shape[1] > 0
            and bool(np.isfinite(array).all()))


R3 = [[0.9, 0.1, 0.2], [0.6, 0.8, 0.3], [0.5, 0.7, 0.9]]
MATRICES = st.one_of(st.lists(st.lists(st.floats(0, 1) | FLOATS, min_size=2, max_size=2), min_size=1, max_size=3),
                     st.just([]), st.just([[]]), st.just([[1.0, 2.0], [3.0]]), st.just("R"), OTHER)


def _head_pairs():
    pair = st.tuples(st.integers(-2, 5) | st.sampled_from([10**9]), st.integers(-2, 5))
    return st.one_of(st.lists(pair, max_size=4), st.just([(0, 1), (0, 1)]), st.just([(0.0, 1)]),
                     st.just([(0,)]), st.just(["01"]), OTHER)


def _heads_ok(v) -> bool:
    return (isinstance(v, list) and len(v) > 0 and len(set(v)) == len(v)
            and all(isinstance(p, tuple) and len(p) == 2 and is_int(p[0], 0, 3) and is_int(p[1], 0, 3) for p in v))


def _scan() -> HeadScan:
    effects = torch.tensor([[0.1, 0.5], [0.3, -0.2]])
    return HeadScan("t", effects, torch.zeros(2, 2, 3), corrupted_prob=0.0, clean_prob=1.0)


def _task():
    return world().task("capital")


def _add_to_residual(model, layer, vector, scale, site):
    with add_to_residual(model, layer, vector, scale=scale, site=site):
        return True


SITES = st.one_of(st.sampled_from(["attention", "layer", "mlp", ""]), OTHER)

PURE = [
    Case("bootstrap_interval", bootstrap_interval, dict(values=[0.1, 0.5, 0.9], n=20, seed=0, level=0.9),
         {"values": (float_lists(), is_finite_list), "n": (any_int(st.integers(-5, 40)), lambda v: is_int(v, 1)),
          "seed": (any_int(), lambda v: is_int(v, 0)),
          "level": (any_float(), lambda v: is_real(v, above=0.0, below=1.0))},
         _interval_ok),
    Case("grouped_bootstrap_interval", grouped_bootstrap_interval, dict(groups=[[0.1, 0.2], [0.5]], n=20),
         {"groups": (st.one_of(st.lists(float_lists(), max_size=3), OTHER),
                     lambda v: isinstance(v, list) and len(v) > 0 and all(is_finite_list(g) for g in v))},
         _interval_ok, {"groups": ("groups", "group values")}),
    Case("backward_transfer", backward_transfer, dict(R=R3, convention="gem", stage=None),
         {"R": (MATRICES, _square), "stage": (any_int(st.integers(-5, 5)), lambda v: v is None or is_int(v, -3, 2)),
          "convention": (st.one_of(st.sampled_from(["gem", "trace", "GEM", ""]), OTHER),
                         lambda v: isinstance(v, str) and v in ("gem", "trace"))},
         lambda r: math.isfinite(r)),
    Case("forward_transfer", forward_transfer, dict(R=R3, baseline=[0.1, 0.2, 0.3]),
         {"baseline": (st.one_of(float_lists(0, 4), st.just("abc"), OTHER),
                       lambda v: isinstance(v, list) and len(v) == 3 and all(is_real(x) for x in v))},
         lambda r: math.isfinite(r)),
    Case("progressive_weight", progressive_weight, dict(step=0, steps=10),
         {"step": (any_int(), lambda v: is_int(v, 0)), "steps": (any_int(), lambda v: is_int(v, 1))},
         lambda r: 0.0 <= r <= 1.0),
    Case("kd_loss", kd_loss, dict(student_logits=torch.randn(2, 5), teacher_logits=torch.randn(2, 5), temperature=2.0),
         {"temperature": (any_float(), lambda v: is_real(v, above=0.0)),
          "student_logits": (tensors(((2, 5), (3, 5), (5,), (2, 2, 5))),  # nan logits give a nan loss, caught in training
                             lambda v: isinstance(v, torch.Tensor) and v.is_floating_point() and v.shape == (2, 5))},
         lambda r: r.dim() == 0, {"student_logits": ("student_logits", "student logits")}),
    Case("cosine", cosine, dict(a=torch.ones(4), b=torch.ones(4)),
         {"a": (tensors(), lambda v: is_tensor(v, (4,))), "b": (tensors(), lambda v: is_tensor(v, (4,)))},
         lambda r: -1.0001 <= r <= 1.0001, {"b": ("b", "a and b")}),
    Case("jaccard", jaccard, dict(a=[(0, 1)], b=[(0, 1), (1, 1)]),
         {"a": (st.one_of(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2)), max_size=3), st.just("ab"),
                          st.just({(0, 1)}), OTHER),
                lambda v: isinstance(v, list))},
         lambda r: 0.0 <= r <= 1.0),
    Case("r_squared", r_squared, dict(x=[0.0, 1.0, 2.0, 3.0], y=[0.0, 1.0, 1.5, 3.5]),
         {"x": (st.one_of(float_lists(0, 5), OTHER), lambda v: is_finite_list(v, 4) and len(v) == 4)},
         lambda r: 0.0 <= r <= 1.0 + 1e-9),
    Case("restored_share", restored_share, dict(if_original=0.9, if_finetuned=0.4, if_restored=0.6),
         {name: (any_float(), is_real) for name in ("if_original", "if_finetuned", "if_restored")},
         lambda r: isinstance(r, float)),  # nan where nothing was lost; huge inputs may overflow to inf
    Case("projections", projections, dict(states=torch.ones(2, 3, 4), directions=torch.ones(4)),
         {"directions": (tensors(((4,), (3, 4), (5,), (0,), (2, 3, 4))),
                         lambda v: is_tensor(v, ndim=(1, 2)) and v.shape[-1] == 4 and (v.dim() == 1 or v.shape[0] == 3)
                         and bool((v.norm(dim=-1) > 0).all()))},
         lambda r: r.shape == (2,) and bool(torch.isfinite(r).all())),
    Case("watch_training", watch_training, dict(every=2, observe=lambda step, model: None),
         {"every": (any_int(), lambda v: is_int(v, 1)),
          "observe": (OTHER, lambda v: callable(v))},
         callable),
    Case("exact_match", exact_match, dict(predictions=["a", "b"], golds=["a", "c"]),
         {"predictions": (str_lists(), lambda v: isinstance(v, list) and len(v) == 2 and all(isinstance(x, str)
                                                                                          for x in v))},
         lambda r: len(r) == 2 and all(isinstance(x, bool) for x in r)),
    Case("random_vector_like", random_vector_like, dict(vector=torch.ones(4), seed=0),
         {"vector": (tensors(), lambda v: is_tensor(v)), "seed": (any_int(), lambda v: is_int(v, 0))},
         lambda r: bool(torch.isfinite(r).all())),
    Case("Steering", Steering, dict(layer=0, scale=1.0, site="attention"),
         {"layer": (any_int(), lambda v: is_int(v, 0)), "scale": (any_float(), is_real),
          "site": (SITES, lambda v: isinstance(v, str) and v in ("attention", "layer"))},
         lambda r: isinstance(r, Steering)),
    Case("batches", lambda **kw: list(batches(**kw)), dict(n=5, batch_size=2),
         {"n": (any_int(st.integers(-5, 70)), lambda v: is_int(v, 0)), "batch_size": (any_int(), lambda v: is_int(v, 1))},
         lambda r: all(s.stop > s.start for s in r)),
    Case("HeadScan.top_heads", lambda k: _scan().top_heads(k), dict(k=2),
         {"k": (any_int(), lambda v: is_int(v, 1, 4))}, lambda r: len(set(r)) == len(r)),
    Case("neutral_prompt", lambda **kw: neutral_prompt("x", rng=__import__("random").Random(0), fmt=TINY_FORMAT, **kw),
         dict(words=["give", "the"], length=3),
         {"length": (any_int(st.integers(-5, 70)), lambda v: is_int(v, 1)),
          "words": (str_lists(), lambda v: isinstance(v, list) and len(v) > 0 and all(isinstance(w, str) for w in v))},
         lambda r: isinstance(r, str), {"words": ("words", "neutral words")}),
    Case("custom_task", custom_task, dict(name="mine", inputs=["peru", "cuba", "chad", "fiji", "mali"],
                                          outputs=["lima", "havana", "x", "suva", "bamako"], instructions=["name it"]),
         {"instructions": (str_lists(), lambda v: isinstance(v, list) and len(v) > 0 and len(set(v)) == len(v)
                           and all(isinstance(w, str) and w.strip() for w in v)),
          "seed": (any_int(), lambda v: is_int(v, 0)),
          "name": (st.one_of(st.sampled_from(["mine", "", " "]), OTHER), lambda v: isinstance(v, str) and v.strip())},
         lambda r: len(r.train + r.valid + r.test) == 5, {"instructions": ("instructions", "instruction", "phrasing")}),
]

# The settings dataclasses: each field drawn alone, the rest their defaults.
COUNT = (any_int(), lambda v: is_int(v, 1))
OPTIONAL_COUNT = (st.one_of(st.none(), any_int()), lambda v: v is None or is_int(v, 1))
WEIGHT = (any_float(), lambda v: is_real(v, 0.0))
RATE = (any_float(), lambda v: is_real(v, above=0.0))
LAYERS = (st.one_of(st.none(), st.lists(st.integers(-2, 5), max_size=3), st.just((1, 1)), st.just([1.5]), OTHER),
          lambda v: v is None or (isinstance(v, list) and len(v) > 0 and len(set(v)) == len(v)
                                  and all(is_int(x, 0) for x in v)))
SCALES = (st.one_of(st.lists(st.floats(-4, 4) | FLOATS, max_size=3), st.just([1.0, 1.0]), OTHER),
          lambda v: isinstance(v, list) and len(v) > 0 and len(set(v)) == len(v) and all(is_real(x) for x in v))

SETTINGS = [
    Case("FinetuneSettings", S.FinetuneSettings, {},
         {"batch_size": COUNT, "max_steps": COUNT, "eval_every": COUNT, "lora_rank": COUNT,
          "warmup_steps": (any_int(), lambda v: is_int(v, 0)), "lr_full": RATE, "lr_lora": RATE, "lora_alpha": RATE,
          "stop_at": (st.one_of(st.none(), any_float()), lambda v: v is None or is_real(v, 0.0))}),
    Case("ExtractionSettings", S.ExtractionSettings, {},
         {"n_prompts": COUNT, "n_random": COUNT, "layers": LAYERS, "scales": SCALES,
          "head_counts": (st.one_of(st.lists(st.integers(-1, 9), max_size=3), OTHER),
                          lambda v: isinstance(v, list) and len(v) > 0 and len(set(v)) == len(v)
                          and all(is_int(x, 1) for x in v)),
          "max_random_cost": (st.one_of(st.none(), any_float()), lambda v: v is None or is_real(v, -1.0, 1.0))}),
    Case("DynamicsSettings", S.DynamicsSettings, {},
         {"heads": COUNT, "n_prompts": COUNT, "watch_every": COUNT, "watch_prompts": COUNT, "scales": SCALES,
          "layers": LAYERS, "checkpoint_every": OPTIONAL_COUNT,
          "overlay_layer": (any_int(), lambda v: is_int(v, 0)),
          "method": (st.one_of(st.sampled_from(["lora", "full", "LoRA"]), OTHER), lambda v: v in ("lora", "full")
                     if isinstance(v, str) else False)}),
    Case("GuidedSettings", S.GuidedSettings, {},
         {"kl_start": WEIGHT, "kl_all": WEIGHT, "head_mse": WEIGHT, "kl_gate": WEIGHT, "mse_gate": WEIGHT,
          "temperature": RATE, "scale": (any_float(), is_real), "layer": (any_int(), lambda v: is_int(v, 0)),
          "progressive_steps": OPTIONAL_COUNT}),
    Case("GuidedTrainingSettings", S.GuidedTrainingSettings, {},
         {"max_steps": COUNT, "vector_heads": COUNT, "vector_prompts": COUNT, "stop_examples": OPTIONAL_COUNT,
          "ablation_seeds": (any_int(), lambda v: is_int(v, 0)),
          "methods": (st.one_of(st.lists(st.sampled_from(["kl", "ewc", "plain_lora", "nope"]), max_size=3), OTHER),
                      lambda v: isinstance(v, list) and len(v) > 0 and len(set(v)) == len(v)
                      and all(m in S.ALL_METHODS for m in v))}),
    Case("TeachingSettings", S.TeachingSettings, dict(tasks=("a", "b")),
         {"examples_per_task": COUNT, "steps": COUNT, "batch_size": COUNT, "lora_rank": COUNT, "lr": RATE,
          "lora_alpha": RATE, "seed": (any_int(), lambda v: is_int(v, 0)),
          "tasks": (str_lists(), lambda v: isinstance(v, list) and len(v) > 0 and len(set(v)) == len(v)
                    and all(isinstance(t, str) for t in v))},
         names={"tasks": ("tasks", "task")}),
]
for case in SETTINGS:
    case.result_ok = lambda result: hasattr(result, "__dataclass_fields__")

TINY = [
    Case("instruction_vector", lambda **kw: instruction_vector(tiny()[0], **kw),
         dict(mean_activations=torch.ones(4, 4, 32), heads=[(0, 1)]),
         {"heads": (_head_pairs(), _heads_ok),
          "mean_activations": (tensors(), lambda v: is_tensor(v, (4, 4, 32)))},
         lambda r: r.vector.shape == (128,) and bool(torch.isfinite(r.vector).all()),
         {"heads": ("heads", "layer", "head"), "mean_activations": ("mean_activations",)}),
    Case("add_to_residual", lambda **kw: _add_to_residual(tiny()[0], **kw),
         dict(layer=1, vector=torch.ones(128), scale=1.0, site="layer"),
         {"layer": (any_int(), lambda v: is_int(v, 0, 3)),
          "vector": (tensors(), lambda v: is_tensor(v, (128,))),
          "scale": (any_float(), is_real),
          "site": (SITES, lambda v: isinstance(v, str) and v in ("attention", "layer"))},
         names={"vector": ("vector",)}),
    Case("build_vectors", lambda k: build_vectors(tiny()[0], {"t": HeadScan("t", torch.rand(4, 4), torch.ones(4, 4, 32),
                                                                           0.0, 1.0)}, k),
         dict(k=2), {"k": (any_int(), lambda v: is_int(v, 1, 16))}, lambda r: len(r["t"].heads) == len(set(r["t"].heads))),
    Case("mean_head_activations", lambda **kw: mean_head_activations(*tiny(), **kw),
         dict(prompts=["what is its capital input : peru output :"], batch_size=8),
         {"prompts": (str_lists(), lambda v: isinstance(v, list) and len(v) > 0
                      and all(isinstance(p, str) and p.strip() for p in v)),
          "batch_size": (any_int(), lambda v: is_int(v, 1))},
         lambda r: r.shape == (4, 4, 32) and bool(torch.isfinite(r).all())),
    Case("greedy_generate", lambda **kw: greedy_generate(*tiny(), stop=(";",), **kw),
         dict(prompts=["what is its capital input : peru output :"], max_new_tokens=3, batch_size=8),
         {"prompts": (str_lists(), lambda v: isinstance(v, list) and all(isinstance(p, str) and p.strip() for p in v)),
          "max_new_tokens": (any_int(), lambda v: is_int(v, 1, 100)),  # beyond: longer than the context
          "batch_size": (any_int(), lambda v: is_int(v, 1))},
         lambda r: all(isinstance(text, str) for text in r),
         {"max_new_tokens": ("max_new_tokens", "generated tokens")}),
    Case("clean_prompts", lambda **kw: clean_prompts(_task(), fmt=TINY_FORMAT, **kw), dict(n=4, n_demos=2, seed=0),
         {"n": (st.one_of(st.none(), any_int()), lambda v: v is None or is_int(v, 1)),
          "n_demos": (any_int(), lambda v: is_int(v, 0)),
          "seed": (any_int(), lambda v: is_int(v, 0)),
          "split": (st.one_of(st.sampled_from(["train", "valid", "dev", ""]), OTHER),
                    lambda v: isinstance(v, str) and v in ("train", "valid"))},
         lambda r: len(r.prompts) == len(r.answers) > 0),
    Case("demonstrations", lambda **kw: demonstrations(_task(), _task().test[0], **kw), dict(k=2, seed=0),
         {"k": (any_int(), lambda v: is_int(v, 0)), "seed": (any_int(), lambda v: is_int(v, 0))},
         lambda r: len({d.input for d in r}) == len(r)),
    Case("instructed_sequence", lambda phrasing: instructed_sequence(tiny()[1], _task(), _task().train[0], phrasing,
                                                                     fmt=TINY_FORMAT),
         dict(phrasing=0), {"phrasing": (any_int(st.integers(-3, 4)), lambda v: is_int(v, 0, 1))},  # two phrasings
         lambda r: len(r.input_ids) == len(r.labels) > 0),
    Case("statement_sequence", lambda template: statement_sequence(tiny()[1], _task(), _task().train[0], template),
         dict(template=0), {"template": (any_int(st.integers(-3, 4)), lambda v: is_int(v, 0, 1))},  # two templates
         lambda r: len(r.input_ids) == len(r.labels) > 0),
    Case("build_world", ivedu.build_world, dict(seed=0),
         {"n_lists": (st.one_of(st.integers(-5, 120), st.sampled_from([10**9]), FLOATS, OTHER),
                      lambda v: is_int(v, 121, math.perm(len(NOUNS), 3))),
          "n_heldout_lists": (st.one_of(st.integers(-3, 0), st.sampled_from([10**6]), FLOATS, OTHER), lambda v: False),
          "seed": (st.one_of(st.integers(-5, -1), FLOATS, OTHER), lambda v: is_int(v, 0))}),
    Case("load_model", ivedu.load_model, dict(name="tiny"),
         {"name": (st.one_of(st.sampled_from(["", "  "]), st.none(), st.integers(), st.just(["tiny"])), lambda v: False),
          "dtype": (st.one_of(st.just("float32"), st.just(32), st.just(np.float32)), lambda v: False)}),
]


# The modules around the method's steps: diagnosis, continual, costs, corpus, results, datasets,
# scorecard and plots. A list of the package's own objects (scores, runs, training sequences) is
# drawn whole, empty, or as something that is not such a list at all (a str, None, a dict); a list
# of objects of another class is the package's own mistake, not a reader's input.


def object_lists(item: Any) -> st.SearchStrategy:
    """Lists of ``item`` (empty ones too) and values that are no list of it."""
    return st.one_of(st.lists(st.just(item), max_size=3), st.text(max_size=3), st.none(), st.booleans(),
                     st.just({"a": 1}), st.just(object()))


def is_list(v: Any) -> bool:
    return isinstance(v, list) and len(v) > 0


def is_name(v: Any) -> bool:
    return isinstance(v, str) and bool(v.strip())


def is_str_list(v: Any, min_size: int = 1, unique: bool = False) -> bool:
    return (isinstance(v, list) and len(v) >= min_size and all(isinstance(x, str) for x in v)
            and (not unique or len(set(v)) == len(v)))


NAMES = (st.one_of(st.sampled_from(["tiny", "", "  "]), OTHER), is_name)
NOWHERE = Path("/nonexistent/ivedu-results")
PATHS = (st.one_of(st.just(NOWHERE), st.sampled_from([str(NOWHERE), "", " "]), OTHER),
         lambda v: v is None or isinstance(v, Path) or is_name(v))
TARGETS = (st.one_of(st.none(), str_lists()), lambda v: v is None or is_str_list(v, unique=True))

ROW = AbilityScores("a", 0.9, 0.8, 0.7, 0.6, 0.9, 0.8)
RUN = DiagnosisRun(0, "lora", 1.0, 3, 0.1, 10, (1.0, 0.5), (ROW,))
SCORES = MethodScores(0.5, 0.4, 0.9, 0.8, 0.1, -0.1, 30)
SEQUENCE = TrainingSequence([1, 2, 3], [-100, 2, 3])
PAIRS = b'[{"input": "peru", "output": "lima"}]'
CARD = {claim: {"tiny": Verdict(claim, "tiny", (Check("x", 0.5, ">= 0", True),), "holds", "results/tiny/x.json")}
        for claim in (1, 2)}
WORKLOAD = dict(n_tasks=2, n_prompts=8, prompt_tokens=16, answer_tokens=3, sweep_layers=2, head_counts=2, scales=2,
                n_valid=8, n_test=8, n_random=2, steps=10, batch_size=4, lora_rank=8)


@cache
def tiny_config():
    return model_config("tiny")


def _finite_matrix(v, shape) -> bool:
    array = _float_array(v)
    return array is not None and array.shape == shape and bool(np.isfinite(array).all())


MORE = [
    Case("diagnosis.summarise", diagnosis_summarise, dict(before=[ROW], new_task_before=0.1, runs=[RUN]),
         {"new_task_before": (any_float(), lambda v: is_real(v, 0.0, 1.0)),
          "before": (object_lists(ROW), is_list), "runs": (object_lists(RUN), is_list)},
         lambda r: abs(r.if_drop) < 1e-12),
    Case("Method", Method, dict(name="m", kind="replay"),
         {"name": NAMES, "replay_per_task": COUNT, "replay_batch": COUNT, "fisher_examples": COUNT,
          "replay_weight": WEIGHT, "ewc_lambda": WEIGHT,
          "kind": (st.one_of(st.sampled_from(["plain", "ewc", "nope", ""]), OTHER),
                   lambda v: isinstance(v, str) and v in KINDS)},
         lambda r: isinstance(r, Method)),
    Case("continual.summarise", continual_summarise, dict(scores=[SCORES]),
         {"scores": (object_lists(SCORES), is_list)}, lambda r: r.n_seeds >= 1),
    Case("continual.format_summary", lambda names: continual_format_summary(
             {"a": continual_summarise([SCORES]), "b": continual_summarise([SCORES])}, names), dict(names=["a"]),
         {"names": (st.one_of(st.lists(st.sampled_from(["a", "b", "zz", ""]), max_size=3), st.text(max_size=3), OTHER),
                    lambda v: v is None or (is_str_list(v, unique=True) and set(v) <= {"a", "b"}))},
         lambda r: isinstance(r, str)),
    Case("Mixture", Mixture, {},
         {**{name: (any_float(), lambda v: is_real(v, 0.0, 1.0)) for name in ("instructed", "fewshot", "statement")},
          "max_demos": COUNT},
         lambda r: isinstance(r, Mixture)),
    Case("collate", collate, dict(sequences=[SEQUENCE], pad_id=0),
         {"pad_id": (any_int(), lambda v: is_int(v, 0, 2**63 - 1)), "sequences": (object_lists(SEQUENCE), is_list)},
         lambda r: r["input_ids"].shape == r["labels"].shape == r["attention_mask"].shape),
    Case("Workload", Workload, WORKLOAD,
         {**{name: COUNT for name in WORKLOAD if name != "n_random"}, "scan_rows_per_pass": COUNT,
          "n_random": (any_int(), lambda v: is_int(v, 0)), "lora_targets": TARGETS},
         lambda r: isinstance(r, Workload)),
    Case("GpuSpec", GpuSpec,
         dict(name="g", memory_gib=16.0, peak_tflops=65.0, bandwidth_gbs=320.0, dtype=torch.float16),
         {"name": NAMES, "memory_gib": RATE, "peak_tflops": RATE, "bandwidth_gbs": RATE},
         lambda r: isinstance(r, GpuSpec)),
    Case("roofline_seconds", roofline_seconds,
         dict(flops=1e12, bytes_read=1e9, gpu=GpuSpec("g", 16.0, 65.0, 320.0, torch.float16)),
         {"flops": (any_float(), lambda v: is_real(v, 0.0)), "bytes_read": (any_float(), lambda v: is_real(v, 0.0))},
         lambda r: 0.0 <= r < math.inf),
    Case("Shape.activation_bytes", lambda batch, seq: Shape(1000, 2, 4, 4, 8, 32, 100).activation_bytes(
             batch, seq, torch.float32), dict(batch=2, seq=8), {"batch": COUNT, "seq": COUNT},
         lambda r: isinstance(r, int) and r > 0),
    Case("lora_parameters", lambda **kw: lora_parameters(tiny_config(), **kw), dict(rank=8, target_modules=None),
         {"rank": COUNT, "target_modules": TARGETS}, lambda r: isinstance(r, int) and r >= 0),
    Case("result_path", result_path, dict(profile="tiny", name="extraction", root=None),
         {"profile": NAMES, "name": NAMES, "root": PATHS}, lambda r: r.name.endswith(".json")),
    Case("format_seconds", format_seconds, dict(seconds=45.0), {"seconds": (any_float(), lambda v: is_real(v, 0.0))},
         lambda r: r.endswith((" s", " min"))),
    Case("markdown_table", markdown_table,
         dict(rows={"a": {"gp": 0.5, "gp_std": 0.1, "steps": 3}}, columns=["gp", "steps"]),
         {"columns": (str_lists(), lambda v: is_str_list(v, unique=True)),
          "counts": (str_lists(), lambda v: is_str_list(v, min_size=0)), "label": NAMES},
         lambda r: r.startswith("| ") and r.count("\n|") >= 2),  # a header, a rule and a row
    Case("sha256_of", sha256_of, dict(data=PAIRS),
         {"data": (st.one_of(st.binary(max_size=8), st.text(max_size=3), OTHER), lambda v: isinstance(v, bytes))},
         lambda r: len(r) == 64),
    Case("parse_pairs", parse_pairs, dict(data=PAIRS, source="x"),
         {"data": (st.one_of(st.just(PAIRS), st.text(max_size=3), OTHER), lambda v: isinstance(v, bytes)),
          "source": NAMES},
         lambda r: r == [("peru", "lima")]),
    Case("dataset_url", dataset_url, dict(name="antonym"), {"name": NAMES, "revision": NAMES},
         lambda r: r.startswith("https://")),
    Case("judge", judge, dict(claim=1, profile="tiny", root=NOWHERE),
         {"claim": (any_int(st.integers(-3, 8)), lambda v: is_int(v, 1, 5)), "profile": NAMES, "root": PATHS},
         lambda r: isinstance(r, Verdict)),
    Case("scorecard_markdown", lambda claims: scorecard_markdown(CARD, claims), dict(claims=[1]),
         {"claims": (st.one_of(st.lists(st.integers(-1, 7), max_size=3), st.just([1, 1]), st.just([1.0]), OTHER),
                     lambda v: v is None or (is_list(v) and len(set(v)) == len(v) and all(is_int(x) and x in CARD
                                                                                        for x in v)))},
         lambda r: r.startswith("| claim")),
]


def _drawn(plot: Callable[..., Any]) -> Callable[..., bool]:
    """``plot`` called and its figure closed: a figure drawn without error is the correct result."""
    def call(**kwargs) -> bool:
        import matplotlib.pyplot as plt

        try:
            plot(**kwargs)
        finally:
            plt.close("all")
        return True

    return call


PLOTS = [
    Case("plot_r_matrix", _drawn(plot_r_matrix), dict(R=[[0.9, 0.1], [0.5, 0.8]], tasks=["x", "y"], baseline=None),
         {"R": (MATRICES, lambda v: _finite_matrix(v, (2, 2))),
          "tasks": (str_lists(), lambda v: is_str_list(v) and len(v) == 2),
          "baseline": (st.one_of(float_lists(0, 3), st.text(max_size=3), OTHER),
                       lambda v: v is None or (isinstance(v, list) and len(v) == 2 and all(is_real(x) for x in v)))},
         names={"tasks": ("tasks", "R")}),
    Case("plot_loss_curve", _drawn(plot_loss_curve), dict(steps=[0, 1, 2], losses=[1.0, 0.5, 0.2]),
         {"steps": (st.one_of(st.lists(st.integers(0, 5), max_size=4), st.text(max_size=3), OTHER),
                    lambda v: isinstance(v, list) and len(v) == 3),
          "losses": (st.one_of(st.lists(st.floats(0.01, 10), max_size=4), st.text(max_size=3), OTHER),
                     lambda v: isinstance(v, list) and len(v) == 3)},
         names={"steps": ("steps", "losses"), "losses": ("losses",)}),
]


def names_the_argument(message: str, name: str, aliases: tuple[str, ...]) -> bool:
    """Whether ``message`` names ``name`` (or one of ``aliases``) as a word; a one-letter name
    must open the message (``"a must be ..."``, ``"a and b must ..."``)."""
    for word in aliases or (name,):
        if len(word) == 1:
            if re.match(rf"{word}(\s|\[)", message):
                return True
        elif re.search(rf"(?<![\w]){re.escape(word)}(?![\w])", message):
            return True
    return False


def check_case(case: Case, data) -> None:
    arg = data.draw(st.sampled_from(sorted(case.args)), label="argument")
    strategy, valid = case.args[arg]
    value = data.draw(strategy, label=arg)
    kwargs = {**case.valid, arg: value}
    if valid(value):
        result = case.call(**kwargs)
        assert case.result_ok(result), f"{case.id}({arg}={value!r}) gave a wrong result: {result!r}"
        return
    try:
        result = case.call(**kwargs)
    except ERRORS as err:
        assert names_the_argument(str(err), arg, case.names.get(arg, ())), \
            f"{case.id}({arg}={value!r}) raised {type(err).__name__} without naming {arg}: {err}"
    else:
        pytest.fail(f"{case.id} accepted the malformed {arg}={value!r} and returned {result!r}")


@pytest.mark.parametrize("case", PURE + SETTINGS + MORE, ids=lambda c: c.id)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_malformed_input_to_a_function_is_refused_naming_the_argument(case, data):
    check_case(case, data)


@pytest.mark.parametrize("case", TINY, ids=lambda c: c.id)
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_malformed_input_with_the_tiny_model_is_refused_naming_the_argument(case, data):
    check_case(case, data)


@pytest.mark.parametrize("case", PLOTS, ids=lambda c: c.id)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_malformed_data_to_a_figure_is_refused_naming_the_argument(case, data):
    check_case(case, data)


def test_the_property_catches_a_missing_check(monkeypatch):
    """The test can fail: with one check taken out (the finiteness of a level), a ``nan`` level is
    accepted and the property says so."""
    import ivedu.controls as controls

    monkeypatch.setattr(controls, "check_fraction", lambda name, value: value)
    case = Case("bootstrap_interval", bootstrap_interval, dict(values=[0.1, 0.5], n=5),
                {"level": (st.just(math.nan), lambda v: False)})

    @settings(max_examples=1, deadline=None, database=None)
    @given(data=st.data())
    def run(data):
        check_case(case, data)

    with pytest.raises(BaseException, match="bootstrap_interval"):
        run()
