"""Instruction-vector dynamics: what fine-tuning does to the vectors, and whether they still work.

The paper's third finding is that fine-tuning *overlays* new patterns on the pathways that
carry the old instructions rather than erasing them. This module holds the measurements of
chapter 3, each a small function over models the caller has fine-tuned:

- **re-extraction** (:func:`extract_vectors`): every general task's scan and vector, at any
  stage of fine-tuning, by exactly chapter 2's recipe;
- **similarity to the original**: cosine of vectors (:func:`cosine`), overlap of the top
  heads (:func:`jaccard`), correlation of the effect maps (:func:`effects_correlation`), and
  two baselines the function-vector forgetting paper compares against -- last-layer hidden
  states (:func:`hidden_state_similarity`) and the weights (:func:`parameter_distance`);
- **R²** of a straight-line fit of retained instruction following on each similarity
  (:func:`r_squared`);
- **restoration** (:func:`choose_steering`, :func:`steered_scores`): the *original* model's
  vector added to the fine-tuned model, with the layer and scale chosen on valid prompts;
  and the converse, the newest task's vector subtracted;
- **overlay** (:func:`projections`): the last-token hidden state projected on the old
  tasks' and the new task's vector directions, step by step during training.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ivedu.architectures import model_layout
from ivedu.evaluation import instructed_prompts
from ivedu.extraction import ExtractionSettings, PromptSet, build_vectors, clean_prompts, corrupted_prompts, scan_task
from ivedu.generation import batches, check_fits, encode_batch, model_device, prompt_ids
from ivedu.intervention import InstructionVector, steered_exact_match, steered_first_token_accuracy
from ivedu.mediation import Head, HeadScan
from ivedu.prompts import PromptFormat
from ivedu.world import Task


# ----------------------------------------------------------------------------- prompts


def instructed_set(task: Task, split: str, *, fmt: PromptFormat) -> PromptSet:
    """Every example of ``split`` under every instruction phrasing: what "instruction
    following" is scored on (the prompts of :func:`ivedu.evaluation.instruction_following_score`)."""
    prompts, answers = instructed_prompts(task, split, fmt=fmt)
    return PromptSet(tuple(prompts), tuple(answers))


# ----------------------------------------------------------------------------- re-extraction


@dataclass(frozen=True)
class StageVectors:
    """Every task's scan and instruction vector in one model (one stage of fine-tuning)."""

    scans: dict[str, HeadScan]
    vectors: dict[str, InstructionVector]


def extract_vectors(model, tokenizer, tasks: Sequence[Task], k: int, n_prompts: int = 48, seed: int = 0,
                    settings: ExtractionSettings = ExtractionSettings(),
                    *, fmt: PromptFormat) -> StageVectors:
    """Chapter 2's scan (clean: instructed, corrupted: instruction removed; train split) and
    each task's vector from its own top-``k`` heads, in ``model`` as it is now."""
    scans = {t.name: scan_task(model, tokenizer, t,
                               clean_prompts(t, "train", settings.clean_style, n_prompts, seed=seed, fmt=fmt),
                               corrupted_prompts(t, "train", settings.corrupted_style, n_prompts, seed=seed,
                                                 fmt=fmt))
             for t in tasks}
    return StageVectors(scans, build_vectors(model, scans, k))


# ----------------------------------------------------------------------------- similarities


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two vectors (0 when either is zero)."""
    a, b = a.flatten().float(), b.flatten().float()
    denominator = a.norm() * b.norm()
    return float(a @ b / denominator) if denominator > 0 else 0.0


def jaccard(a: Sequence[Head], b: Sequence[Head]) -> float:
    """Overlap of two head sets: |A ∩ B| / |A ∪ B| (1: the same heads)."""
    a, b = set(a), set(b)
    return len(a & b) / len(a | b) if a | b else 1.0


def effects_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of two ``[layers, heads]`` effect maps: does the same picture remain?"""
    return float(np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1])


@torch.no_grad()
def residual_states(model, tokenizer, prompts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
    """The residual stream after every decoder layer at each prompt's last token:
    ``[layers, n, hidden]`` (float32, on the CPU).

    Read with hooks on the decoder layers' outputs (the last one before the final norm):
    the hidden state into which every head before it has added its output.
    """
    layout = model_layout(model)
    ids = prompt_ids(tokenizer, prompts)
    check_fits(model, ids)
    rows: list[list[torch.Tensor]] = [[] for _ in layout.layers]

    def keeper(layer: int):
        def keep(module, args, output):
            rows[layer].append((output[0] if isinstance(output, tuple) else output)[:, -1].float().cpu())
        return keep

    handles = [module.register_forward_hook(keeper(i)) for i, module in enumerate(layout.layers)]
    try:
        for sl in batches(len(ids), batch_size):
            model(**encode_batch(tokenizer, ids[sl], model_device(model)))
    finally:
        for handle in handles:
            handle.remove()
    return torch.stack([torch.cat(layer_rows) for layer_rows in rows])


def hidden_state_similarity(original, finetuned, tokenizer, prompts: Sequence[str]) -> float:
    """Mean cosine, over prompts, of the two models' last-layer last-token hidden states."""
    a = residual_states(original, tokenizer, prompts)[-1]
    b = residual_states(finetuned, tokenizer, prompts)[-1]
    return float(torch.nn.functional.cosine_similarity(a, b, dim=-1).mean())


@torch.no_grad()
def parameter_distance(original: nn.Module, finetuned: nn.Module) -> float:
    """L2 distance between two models' weights, over the parameters they share by name."""
    theirs = dict(finetuned.named_parameters())
    squared = 0.0
    for name, p in original.named_parameters():
        if name not in theirs:
            raise ValueError(f"parameter {name!r} is missing from the fine-tuned model: merge LoRA adapters "
                             "(merge_and_unload) before comparing weights")
        squared += float((theirs[name].float() - p.float()).pow(2).sum())
    return squared ** 0.5


def r_squared(x: Sequence[float], y: Sequence[float]) -> float:
    """R² of the least-squares line ``y ~ a + b x``: the share of y's variance it explains."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) != len(y) or len(x) < 3:
        raise ValueError(f"need at least 3 (x, y) pairs of equal length, got {len(x)} and {len(y)}")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1] ** 2)


# ----------------------------------------------------------------------------- restoration


@dataclass(frozen=True)
class Steering:
    """Where and how strongly a vector is added: chosen on valid prompts, reused on test."""

    layer: int
    scale: float
    valid_accuracy: float


def choose_steering(model, tokenizer, prompts: PromptSet, vector: torch.Tensor, layers: Sequence[int],
                    scales: Sequence[float], site: str = "attention") -> Steering:
    """The (layer, scale) whose steering gives the best first-token accuracy on ``prompts``.

    ``prompts`` are valid-split prompts (never the test prompts the result is reported on).
    A negative scale subtracts the vector. Ties go to the first setting in the grid.
    """
    best: Steering | None = None
    for layer, scale in itertools.product(layers, scales):
        accuracy = steered_first_token_accuracy(model, tokenizer, prompts.prompts, prompts.answers,
                                                vector, layer, scale, site)
        if best is None or accuracy > best.valid_accuracy:
            best = Steering(layer, scale, accuracy)
    if best is None:
        raise ValueError("give at least one layer and one scale")
    return best


def steered_scores(model, tokenizer, prompts: PromptSet, vector: torch.Tensor | None, steering: Steering | None,
                   site: str = "attention") -> dict[str, float]:
    """Exact match and first-token accuracy on ``prompts`` with the vector added (``None``: without)."""
    layer, scale = (steering.layer, steering.scale) if steering else (0, 1.0)
    args = (model, tokenizer, prompts.prompts, prompts.answers, vector, layer, scale, site)
    return {"exact_match": steered_exact_match(*args), "first_token": steered_first_token_accuracy(*args)}


# ----------------------------------------------------------------------------- overlay


def projections(states: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Mean projection of hidden states on unit directions, per layer: ``[layers]``.

    ``states``: ``[layers, n, hidden]`` from :func:`residual_states`; ``directions``:
    ``[hidden]`` (one direction for every prompt) or ``[n, hidden]`` (one per prompt, e.g.
    each prompt's own task's vector), normalised here. A large projection on a task's
    vector means the state at the answer position points the way that task's heads push it.
    """
    directions = directions.float()
    units = directions / directions.norm(dim=-1, keepdim=True)
    return (states * units).sum(-1).mean(-1)


def watch_training(every: int, observe: Callable[[int, nn.Module], None]):
    """A :data:`ivedu.finetune.LossFn` that is plain cross-entropy, but first calls
    ``observe(step, model)`` (in eval mode, without gradients) every ``every`` steps.

    Pass it as ``finetune(..., loss_fn=watch_training(10, record))`` to follow any quantity
    of the model as it trains, without touching the training itself.
    """
    if every < 1:
        raise ValueError(f"every must be at least 1, got {every}")

    def loss_fn(model: nn.Module, batch: dict, step: int) -> torch.Tensor:
        if step % every == 0:
            model.eval()
            with torch.no_grad():
                observe(step, model)
            model.train()
        return model(**batch).loss

    return loss_fn
