"""Instruction-vector dynamics: what fine-tuning does to the vectors, and whether they still work.

The paper's third finding is that fine-tuning *overlays* new patterns on the pathways that
carry the old instructions rather than erasing them. This module holds chapter 3's method,
from the single measurements to a whole run over a sequence of new tasks:

- **re-extraction** (:func:`extract_vectors`): every general task's scan and vector, at any
  stage of fine-tuning, by exactly chapter 2's recipe;
- **similarity to the original**: cosine of vectors (:func:`cosine`), overlap of the top
  heads (:func:`jaccard`), correlation of the effect maps (:func:`effects_correlation`), and
  two baselines the function-vector forgetting paper compares against -- last-layer hidden
  states (:func:`hidden_state_similarity`) and the weights (:func:`parameter_distance`);
  :func:`compare_stage` measures them all for every task at one stage;
- **R²** of a straight-line fit of retained instruction following on each similarity
  (:func:`r_squared`, over (task, stage end or checkpoint along training) points: :func:`fit_r2`,
  :class:`Checkpoint`);
- **restoration** (:func:`restoration`, built on :func:`choose_steering` and
  :func:`steered_scores`): the *original* model's vector added to the fine-tuned model, with
  the layer and scale chosen on valid prompts among the cells where a random vector of its
  norm does not break the original model (the scale rule, :func:`random_costs`); and the
  converse, the newest task's vector subtracted; :func:`analyse_stage` does re-extraction,
  comparison and both;
- **overlay** (:func:`projections`, :func:`overlay`): the last-token hidden state projected
  on the old tasks' and the new task's vector directions, step by step during training
  (:func:`watch_training` records it without changing the training);
- **the whole run** (:func:`run_seed`): :func:`ivedu.finetune.finetune_sequence` along the
  sequence with every stage analysed (and checkpoints along it), and :func:`summarise` over
  seeds, with bootstrap intervals of claim 3's effect (:func:`fits_interval`) and claim 4's
  (:func:`restoration_lead`).

Results are frozen dataclasses: a task at a stage (:class:`TaskAtStage`), a stage
(:class:`Stage`), a point along training (:class:`Checkpoint`), a seed's run
(:class:`SeedRun`) and the summary (:class:`DynamicsSummary`).
"""

from __future__ import annotations

import copy
import itertools
import math
import statistics
from dataclasses import asdict, dataclass, replace
from typing import Callable, Collection, Sequence

import numpy as np
import torch
from torch import nn

from ivedu.architectures import model_layout
from ivedu.arguments import (check_finite, check_fraction, check_int, check_ints, check_number, check_numbers,
                             check_positive_int, check_prompts, check_seed, check_sequence, check_tensor)
from ivedu.controls import Effect, constant_score, paired_bootstrap_interval
from ivedu.evaluation import exact_match, instructed_prompts
from ivedu.extraction import PromptSet, build_vectors, scan_tasks
from ivedu.finetune import FinetuneResult, SequenceState, finetune_sequence
from ivedu.generation import batches, check_fits, encode_batch, model_device, prompt_ids
from ivedu.intervention import (InstructionVector, Steering, random_vector_like, steered_answers_each,
                                steered_first_token_accuracy, steered_first_token_hits_each)
from ivedu.mediation import Head, HeadScan
from ivedu.prompts import PromptFormat
from ivedu.resume import PartialPiece
from ivedu.settings import DynamicsSettings, ExtractionSettings, FinetuneSettings
from ivedu.study import ModelUnderStudy
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


def extract_vectors(lm: ModelUnderStudy, tasks: Sequence[Task], k: int, n_prompts: int, seed: int,
                    settings: ExtractionSettings, progress: bool = False) -> StageVectors:
    """Chapter 2's scan (:func:`ivedu.extraction.scan_tasks`: clean prompts instructed, corrupted
    ones with the instruction removed, ``n_prompts`` of each from the train split, drawn with
    ``seed``) and each task's vector from its own top-``k`` heads, in ``lm.model`` as it is now."""
    scans = scan_tasks(lm, tasks, n_prompts, seed, settings, progress=progress)
    return StageVectors(scans, build_vectors(lm.model, scans, k))


# ----------------------------------------------------------------------------- similarities


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two vectors (0 when either is zero)."""
    _check_pair(a, b)
    a, b = a.flatten().float(), b.flatten().float()
    denominator = a.norm() * b.norm()
    return float(a @ b / denominator) if denominator > 0 else 0.0


def jaccard(a: Sequence[Head], b: Sequence[Head]) -> float:
    """Overlap of two head sets: |A ∩ B| / |A ∪ B| (1: the same heads)."""
    check_sequence("a", a)
    check_sequence("b", b)
    a, b = set(a), set(b)
    return len(a & b) / len(a | b) if a | b else 1.0


def effects_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of two ``[layers, heads]`` effect maps: does the same picture remain?"""
    _check_pair(a, b)
    return float(np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1])


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    check_tensor("a", a, floating=True)
    check_tensor("b", b, floating=True)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {list(a.shape)} and {list(b.shape)}: compare "
                         "two vectors (or two effect maps) of one model")


@torch.no_grad()
def residual_states(model, tokenizer, prompts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
    """The residual stream after every decoder layer at each prompt's last token:
    ``[layers, n, hidden]`` (float32, on the CPU).

    Read with hooks on the decoder layers' outputs (the last one before the final norm):
    the hidden state into which every head before it has added its output.
    """
    check_prompts(prompts)
    check_positive_int("batch_size", batch_size)
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
    check_finite("x", check_sequence("x", x))
    check_finite("y", check_sequence("y", y))
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) != len(y) or len(x) < 3:
        raise ValueError(f"x and y need at least 3 (x, y) pairs of equal length, got {len(x)} and {len(y)}")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1] ** 2)


# ----------------------------------------------------------------------------- restoration


@dataclass(frozen=True)
class ChosenSteering:
    """The cell of the restoration grid chosen on valid prompts, reused on test: ``steering``
    (its layer, scale and site) and the ``valid_accuracy`` (first-token) it gave there."""

    steering: Steering
    valid_accuracy: float


Cell = tuple[int, float]  # (layer, scale) of the restoration grid


def choose_steering(lm: ModelUnderStudy, prompts: PromptSet, vector: torch.Tensor, layers: Sequence[int],
                    scales: Sequence[float], site: str, allowed: Collection[Cell] | None = None) -> ChosenSteering:
    """The (layer, scale) whose steering at ``site`` gives the best first-token accuracy on ``prompts``.

    ``prompts`` are valid-split prompts (never the test prompts the result is reported on).
    A negative scale subtracts the vector. Ties go to the first setting in the grid.
    ``allowed``: the only cells that may be chosen (the scale rule, :func:`random_costs`);
    ``None``: every cell.
    """
    check_ints("layers", layers, 0, nonempty=False)
    check_numbers("scales", scales, nonempty=False)
    cells = [cell for cell in itertools.product(layers, scales) if allowed is None or cell in allowed]
    hits = steered_first_token_hits_each(lm, prompts.prompts, prompts.answers,
                                         [(vector, Steering(*cell, site)) for cell in cells]) if cells else []
    best: ChosenSteering | None = None
    for cell, cell_hits in zip(cells, hits):
        accuracy = sum(cell_hits) / len(cell_hits)
        if best is None or accuracy > best.valid_accuracy:
            best = ChosenSteering(Steering(*cell, site), accuracy)
    if best is None:
        raise ValueError("give at least one layer and one scale" if allowed is None
                         else "no cell of the grid is allowed: give at least one allowed (layer, scale)")
    return best


def random_costs(lm: ModelUnderStudy, prompts: PromptSet, vector: torch.Tensor, layers: Sequence[int],
                 scales: Sequence[float], seed: int, site: str) -> dict[Cell, float]:
    """Per (layer, scale): first-token accuracy on ``prompts`` without steering minus with a random
    vector of ``vector``'s norm (:func:`ivedu.intervention.random_vector_like` with ``seed``, the
    restoration's control) added there, at ``site``.

    Measured on the *original* model, where the task is done: a cell where noise of the vector's
    size already breaks instructed prompts is one where adding anything is destructive, and a
    restoration there could not be told from its control (the scale rule of :func:`restoration`).
    """
    check_ints("layers", layers, 0)
    check_numbers("scales", scales)
    random = random_vector_like(vector, seed)
    plain = steered_first_token_accuracy(lm, prompts.prompts, prompts.answers, None, None)
    cells = list(itertools.product(layers, scales))
    hits = steered_first_token_hits_each(lm, prompts.prompts, prompts.answers,
                                         [(random, Steering(*cell, site)) for cell in cells])
    return {cell: plain - sum(cell_hits) / len(cell_hits) for cell, cell_hits in zip(cells, hits)}


def steered_scores(lm: ModelUnderStudy, prompts: PromptSet, vector: torch.Tensor | None,
                   steering: Steering | None) -> dict[str, float]:
    """Exact match and first-token accuracy on ``prompts`` with the vector added as ``steering``
    says (``None``, ``None``: without)."""
    return steered_scores_each(lm, prompts, [vector], steering)[0]


def steered_scores_each(lm: ModelUnderStudy, prompts: PromptSet, vectors: Sequence[torch.Tensor | None],
                        steering: Steering | None) -> list[dict[str, float]]:
    """:func:`steered_scores` for each of ``vectors`` at the same steering, the prompts' positions
    before the last computed once for all (:func:`ivedu.intervention.steered_answers_each`)."""
    steers = [(vector, steering) for vector in vectors]
    hits = steered_first_token_hits_each(lm, prompts.prompts, prompts.answers, steers)
    answers = steered_answers_each(lm, prompts.prompts, prompts.answers, steers)
    return [{"exact_match": sum(exact_match(a, prompts.answers)) / len(prompts.answers),
             "first_token": sum(h) / len(h)} for h, a in zip(hits, answers)]


@dataclass(frozen=True)
class Restoration:
    """One task's test scores with a vector added (or subtracted) where valid prompts chose.

    ``layer``, ``scale``: the steering chosen on the valid split (a negative scale subtracts);
    ``exact_match``, ``first_token``: test scores under the instruction with the vector;
    ``random_exact_match``, ``random_first_token``: the same with a random vector of the same
    norm at the same layer and scale, the control the vector must beat; ``random_cost``: what
    that random vector costs the original model's instructed valid accuracy at the chosen cell
    (:func:`random_costs`); ``constant_em``: exact match of always giving the task's most
    frequent train answer on test (:func:`ivedu.controls.constant_score`), the floor of any
    answer that ignores the input.

    ``skipped``: why nothing was added, ``None`` when something was. When no cell of the grid
    passes the scale rule, ``layer`` and ``scale`` are ``None`` and every score is the model's
    own, unsteered: the vector restores nothing it could safely be credited with, and a mean
    over tasks counts it so (``random_cost`` is then the cheapest cell's cost).
    """

    layer: int | None
    scale: float | None
    exact_match: float
    first_token: float
    random_exact_match: float
    random_first_token: float
    random_cost: float | None = None
    constant_em: float | None = None
    skipped: str | None = None


def restoration(original: nn.Module, lm: ModelUnderStudy, tasks: Sequence[Task], vectors: dict[str, torch.Tensor],
                settings: DynamicsSettings, sign: float = 1.0, seed: int = 0) -> dict[str, Restoration]:
    """Per task: ``vectors[task]`` added to ``lm.model``, steering chosen on valid, scored on test.

    The grid is ``settings.restore_layers(n_layers)`` x ``settings.scales`` (every layer when
    ``settings.layers`` is ``None``), at ``settings.site``; ``sign=-1`` subtracts the vectors
    (the scales are negated). ``seed`` draws the random control vector.

    The scale rule: only cells where the random control costs ``original`` (the model before
    fine-tuning) at most ``settings.max_random_cost`` of its instructed valid accuracy
    (:func:`random_costs`) may be chosen -- at a destructive scale any vector, random or not,
    drives instruction following down, and the control cannot fail. A task with no such cell is
    left unsteered, with ``skipped`` saying so (:class:`Restoration`).
    """
    layers = settings.restore_layers(lm.layout.n_layers)
    scales = [sign * s for s in settings.scales]
    out = {}
    for task in tasks:
        vector = vectors[task.name]
        valid, test = instructed_set(task, "valid", fmt=lm.fmt), instructed_set(task, "test", fmt=lm.fmt)
        costs = random_costs(lm.with_model(original), valid, vector, layers, scales, seed, settings.site)
        allowed = {cell for cell, cost in costs.items() if cost <= settings.max_random_cost}
        constant = constant_score(task, "test")
        if not allowed:
            plain = steered_scores(lm, test, None, None)
            cheapest = min(costs.values())
            out[task.name] = Restoration(None, None, plain["exact_match"], plain["first_token"], plain["exact_match"],
                                         plain["first_token"], cheapest, constant,
                                         f"no safe scale: a random vector costs at least {cheapest:.2f} "
                                         f"> max_random_cost {settings.max_random_cost}")
            continue
        steering = choose_steering(lm, valid, vector, layers, scales, settings.site, allowed).steering
        scores, random = steered_scores_each(lm, test, [vector, random_vector_like(vector, seed)], steering)
        out[task.name] = Restoration(steering.layer, steering.scale, scores["exact_match"], scores["first_token"],
                                     random["exact_match"], random["first_token"],
                                     costs[(steering.layer, steering.scale)], constant)
    return out


# ----------------------------------------------------------------------------- overlay


def projections(states: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Mean projection of hidden states on unit directions, per layer: ``[layers]``.

    ``states``: ``[layers, n, hidden]`` from :func:`residual_states`; ``directions``:
    ``[hidden]`` (one direction for every prompt) or ``[n, hidden]`` (one per prompt, e.g.
    each prompt's own task's vector), normalised here. A large projection on a task's
    vector means the state at the answer position points the way that task's heads push it.
    """
    check_tensor("states", states, 3, floating=True)
    check_tensor("directions", directions, (1, 2), floating=True)
    if directions.shape[-1] != states.shape[-1]:
        raise ValueError(f"directions must end in the hidden size of states ({states.shape[-1]}), got shape "
                         f"{list(directions.shape)}")
    if directions.dim() == 2 and directions.shape[0] != states.shape[1]:
        raise ValueError(f"directions has {directions.shape[0]} rows but states {states.shape[1]} prompts: give one "
                         "direction per prompt, or one [hidden] direction for all")
    if not bool((directions.norm(dim=-1) > 0).all()):
        raise ValueError("directions holds a zero vector, which has no direction: drop it")
    directions = directions.float()
    units = directions / directions.norm(dim=-1, keepdim=True)
    return (states * units).sum(-1).mean(-1)


def watch_training(every: int, observe: Callable[[int, nn.Module], None]):
    """A :data:`ivedu.finetune.LossFn` that is plain cross-entropy, but first calls
    ``observe(step, model)`` (in eval mode, without gradients) every ``every`` steps.

    Pass it as the objective, ``finetune(lm, task, settings, method, seed, watch_training(10, record))``,
    to follow any quantity of the model as it trains, without touching the training itself.
    """
    check_int("every", every)
    if every < 1:
        raise ValueError(f"every must be at least 1, got {every}")
    if not callable(observe):
        raise TypeError(f"observe must be a function (step, model) -> None, got {type(observe).__name__}")

    def loss_fn(model: nn.Module, batch: dict, step: int) -> torch.Tensor:
        if step % every == 0:
            model.eval()
            with torch.no_grad():
                observe(step, model)
            model.train()
        return model(**batch).loss

    return loss_fn


@dataclass(frozen=True)
class OverlayPoint:
    """Where the watched prompts' answer-position states point at one training step.

    ``old``: ``[layers]`` mean projection of each prompt's state on its own task's original
    vector (unit direction), per residual layer; ``new``: ``[layers]`` the same on the new
    task's vector.
    """

    step: int
    old: tuple[float, ...]
    new: tuple[float, ...]


def watch_prompts(tasks: Sequence[Task], n: int, *, fmt: PromptFormat) -> tuple[list[str], list[str]]:
    """The prompts followed during training -- the first ``n`` valid prompts (under the
    instruction) of each task -- and the task each belongs to."""
    prompts, owners = [], []
    for task in tasks:
        chosen = instructed_set(task, "valid", fmt=fmt).prompts[:n]
        prompts += chosen
        owners += [task.name] * len(chosen)
    return prompts, owners


def overlay(snapshots: Sequence[tuple[int, torch.Tensor]], owners: Sequence[str], start: StageVectors,
            new_vector: torch.Tensor) -> tuple[OverlayPoint, ...]:
    """Per snapshot ``(step, states [layers, n, hidden])``: the mean projection on each prompt's
    own original vector (``owners[i]``'s in ``start``) and on the new task's vector."""
    own = torch.stack([start.vectors[o].vector for o in owners])
    return tuple(OverlayPoint(step, tuple(projections(states, own).tolist()),
                              tuple(projections(states, new_vector).tolist()))
                 for step, states in snapshots)


# ----------------------------------------------------------------------------- one stage


@dataclass(frozen=True)
class TaskAtStage:
    """One general task in the model after one stage of fine-tuning, against the original.

    ``iv_cosine``: cosine of its vector re-extracted now with the original one;
    ``heads_jaccard``: overlap of their heads; ``effects_correlation``: correlation of the
    ``[layers, heads]`` effect maps; ``hidden_cosine``: last-layer hidden-state cosine with the
    original model on its test prompts; ``param_distance``: L2 distance of the weights (the
    same for every task of a stage); ``heads``: the heads of the vector now, best first;
    ``if_exact_match`` / ``if_first_token``: instruction following now (test split);
    ``restored``: the original vector added, ``subtracted``: the newest task's vector
    subtracted (``None`` where the stage was analysed without them, and for the original model).
    """

    task: str
    iv_cosine: float
    heads_jaccard: float
    effects_correlation: float
    hidden_cosine: float
    param_distance: float
    heads: tuple[Head, ...]
    if_exact_match: float
    if_first_token: float
    restored: Restoration | None = None
    subtracted: Restoration | None = None


def field_value(row: TaskAtStage, field: str) -> float:
    """One number of a row; a dotted ``field`` reads into its restoration, e.g.
    ``"restored.exact_match"`` or ``"subtracted.exact_match"``."""
    head, _, rest = field.partition(".")
    value = getattr(row, head)
    if rest:
        if value is None:
            raise ValueError(f"{row.task!r} has no {head!r} scores at this stage: it was analysed with restore=False")
        value = getattr(value, rest)
    return value


def compare_stage(original: nn.Module, lm: ModelUnderStudy, tasks: Sequence[Task], start: StageVectors,
                  now: StageVectors) -> dict[str, TaskAtStage]:
    """Per task: how its vector, heads and effect map moved since ``start``, the hidden-state
    similarity of ``lm.model`` to ``original``, the distance of the weights, and instruction
    following now. ``lm.model`` must be a plain model (LoRA merged)."""
    distance = parameter_distance(original, lm.model)
    rows = {}
    for task in tasks:
        name = task.name
        test = instructed_set(task, "test", fmt=lm.fmt)
        scores = steered_scores(lm, test, None, None)
        rows[name] = TaskAtStage(
            task=name,
            iv_cosine=cosine(start.vectors[name].vector, now.vectors[name].vector),
            heads_jaccard=jaccard(start.vectors[name].heads, now.vectors[name].heads),
            effects_correlation=effects_correlation(start.scans[name].effects, now.scans[name].effects),
            hidden_cosine=hidden_state_similarity(original, lm.model, lm.tokenizer, test.prompts),
            param_distance=distance,
            heads=tuple(now.vectors[name].heads),
            if_exact_match=scores["exact_match"],
            if_first_token=scores["first_token"])
    return rows


def analyse_stage(original: nn.Module, lm: ModelUnderStudy, tasks: Sequence[Task], start: StageVectors,
                  new_task: Task, seed: int, settings: DynamicsSettings, restore: bool = True, *,
                  extraction: ExtractionSettings) -> tuple[dict[str, TaskAtStage], StageVectors]:
    """Everything measured after one stage of fine-tuning, and the vectors re-extracted in it.

    ``original``: the model before any fine-tuning, ``start``: its vectors; ``lm``: the model
    now. Every task's vector is re-extracted (``settings.heads`` heads, ``settings.n_prompts``
    prompts drawn with ``seed``), and the new task's too: it is the one subtracted. With
    ``restore``, each row also has ``restored`` (the original vector added) and ``subtracted``
    (the new task's vector subtracted), each with its layer and scale chosen on valid.
    """
    now = extract_vectors(lm, list(tasks) + [new_task], settings.heads, settings.n_prompts, seed, extraction)
    rows = compare_stage(original, lm, tasks, start, now)
    if restore:
        plus = restoration(original, lm, tasks, {t.name: start.vectors[t.name].vector for t in tasks}, settings,
                           seed=seed)
        minus = restoration(original, lm, tasks, {t.name: now.vectors[new_task.name].vector for t in tasks}, settings,
                            sign=-1.0, seed=seed)
        rows = {name: replace(row, restored=plus[name], subtracted=minus[name]) for name, row in rows.items()}
    return rows, now


@dataclass(frozen=True)
class Stage:
    """One stage of the sequence: ``stage`` 0 is the original model, ``stage`` t the model after
    the t-th new task ``task``, trained for ``steps`` steps (``None`` for the original).

    ``rows``: general task -> :class:`TaskAtStage`; ``overlay``: the watched states during this
    stage's training (recorded in the first stage only, empty otherwise).
    """

    stage: int
    task: str | None
    steps: int | None
    rows: dict[str, TaskAtStage]
    overlay: tuple[OverlayPoint, ...] = ()

    def mean(self, field: str) -> float:
        """Mean of one per-task field over the general tasks (see :func:`field_value`)."""
        return statistics.mean(field_value(row, field) for row in self.rows.values())


# ----------------------------------------------------------------------------- along training


@dataclass(frozen=True)
class Checkpoint:
    """The model part-way through stage ``stage``'s training, after ``step`` steps of it:
    ``rows``, general task -> :class:`TaskAtStage` against the original (no restoration)."""

    stage: int
    step: int
    rows: dict[str, TaskAtStage]


def checkpoint(original: nn.Module, lm: ModelUnderStudy, general: Sequence[Task], start: StageVectors, stage: int,
               step: int, seed: int, settings: DynamicsSettings, extraction: ExtractionSettings) -> Checkpoint:
    """A :class:`Checkpoint` of ``lm.model`` as it trains: a copy (LoRA merged into it, the
    model in training untouched) re-extracted as the stage ends are (``settings.heads`` heads,
    ``settings.n_prompts`` prompts drawn with ``seed``) and compared with ``original``."""
    merged = copy.deepcopy(lm.model)
    if hasattr(merged, "merge_and_unload"):  # a peft model: its adapters into the weights
        merged = merged.merge_and_unload()
    now = lm.with_model(merged)
    vectors = extract_vectors(now, general, settings.heads, settings.n_prompts, seed, extraction)
    return Checkpoint(stage, step, compare_stage(original, now, general, start, vectors))


def watch_all(watchers: Sequence[tuple[int, Callable[[int, nn.Module], None]]]):
    """One :func:`watch_training` loss for several observers, each ``(every, observe)`` called
    at the steps due to it (``None`` when there are none: plain cross-entropy)."""
    if not watchers:
        return None

    def observe(step: int, model: nn.Module) -> None:
        for every, watcher in watchers:
            if step % every == 0:
                watcher(step, model)

    return watch_training(math.gcd(*(every for every, _ in watchers)), observe)


# ----------------------------------------------------------------------------- the whole run


@dataclass(frozen=True)
class Fits:
    """R² of instruction following (exact match) on each similarity, over the (task, checkpoint)
    points of the fine-tuned stages' ends and of the checkpoints along training: the vector's
    cosine (``r2_iv``), the last-layer hidden state's (``r2_hidden``) and the weight distance
    (``r2_params``); ``n_points``: how many points were fitted."""

    r2_iv: float
    r2_hidden: float
    r2_params: float
    n_points: int


# The similarity of each fit, in Fits' order: the vector's cosine, then the two baselines.
FIT_MEASURES = ("iv_cosine", "hidden_cosine", "param_distance")


def fit_points(stages: Sequence[Stage], checkpoints: Sequence[Checkpoint] = ()) -> np.ndarray:
    """``[points, 4]``: per (task, stage end or checkpoint), the :data:`FIT_MEASURES` and
    instruction following (exact match), the columns :func:`fit_r2` fits."""
    rows = [row for part in (*stages, *checkpoints) for row in part.rows.values()]
    return np.array([[getattr(row, m) for m in FIT_MEASURES] + [row.if_exact_match] for row in rows], float)


def fit_r2(stages: Sequence[Stage], checkpoints: Sequence[Checkpoint] = ()) -> Fits:
    """:class:`Fits` over every (task, stage) of ``stages`` and every (task, checkpoint) of
    ``checkpoints`` (leave out the original model: it is similar to itself by construction)."""
    points = fit_points(stages, checkpoints)
    y = points[:, -1]
    return Fits(*(r_squared(points[:, i], y) for i in range(len(FIT_MEASURES))), n_points=len(points))


@dataclass(frozen=True)
class SeedRun:
    """One seed's run: ``stages[0]`` the original model, then one :class:`Stage` per new task
    (the first with the overlay); ``fits``: R² over the fine-tuned stages and the checkpoints;
    ``checkpoints``: the model along training, in order (empty without ``checkpoint_every``).
    ``new_before``: each new task's exact match under its instruction on its test split before
    any training; ``new_after[t]``: every new task's after stage ``t + 1`` (the continual
    learning matrix R of :func:`ivedu.finetune.finetune_sequence`): whether each stage learnt its
    task, and what the later ones cost it."""

    seed: int
    stages: tuple[Stage, ...]
    fits: Fits
    checkpoints: tuple[Checkpoint, ...] = ()
    new_before: tuple[float, ...] = ()
    new_after: tuple[tuple[float, ...], ...] = ()

    def as_dict(self) -> dict:
        """Every field, JSON-ready (:meth:`from_dict` reads it back): what a resumed command keeps."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "SeedRun":
        """The run :meth:`as_dict` wrote: lists back to tuples, nested dicts to their dataclasses."""
        return cls(data["seed"], tuple(map(_stage_from_dict, data["stages"])), Fits(**data["fits"]),
                   tuple(map(_checkpoint_from_dict, data["checkpoints"])), tuple(data.get("new_before", ())),
                   tuple(tuple(row) for row in data.get("new_after", ())))


def _rows_from_dict(values: dict) -> dict[str, TaskAtStage]:
    def restoration(value: dict | None) -> Restoration | None:
        return None if value is None else Restoration(**value)

    return {name: TaskAtStage(**{**row, "heads": tuple(tuple(h) for h in row["heads"]),
                                 "restored": restoration(row["restored"]), "subtracted": restoration(row["subtracted"])})
            for name, row in values.items()}


def _stage_from_dict(s: dict) -> Stage:
    return Stage(s["stage"], s["task"], s["steps"], _rows_from_dict(s["rows"]),
                 tuple(OverlayPoint(p["step"], tuple(p["old"]), tuple(p["new"])) for p in s["overlay"]))


def _checkpoint_from_dict(c: dict) -> Checkpoint:
    return Checkpoint(c["stage"], c["step"], _rows_from_dict(c["rows"]))


def _vectors_as_parts(vectors: StageVectors) -> tuple[dict[str, torch.Tensor], dict]:
    """``vectors`` as named tensors and JSON (what :class:`ivedu.resume.PartialPiece` keeps)."""
    tensors, meta = {}, {}
    for name, scan in vectors.scans.items():
        iv = vectors.vectors[name]
        tensors.update({f"{name}/effects": scan.effects, f"{name}/means": scan.mean_activations,
                        f"{name}/vector": iv.vector})
        meta[name] = {"corrupted_prob": scan.corrupted_prob, "clean_prob": scan.clean_prob,
                      "heads": [list(h) for h in iv.heads]}
    return tensors, meta


def _vectors_from_parts(tensors: dict[str, torch.Tensor], meta: dict) -> StageVectors:
    scans = {name: HeadScan(name, tensors[f"{name}/effects"], tensors[f"{name}/means"], m["corrupted_prob"],
                            m["clean_prob"]) for name, m in meta.items()}
    vectors = {name: InstructionVector(name, tensors[f"{name}/vector"], tuple(tuple(h) for h in m["heads"]))
               for name, m in meta.items()}
    return StageVectors(scans, vectors)


def run_seed(lm: ModelUnderStudy, general: Sequence[Task], sequence: Sequence[Task], seed: int,
             settings: DynamicsSettings, training: FinetuneSettings, extraction: ExtractionSettings,
             log: Callable[[str], None] | None = None, partial: PartialPiece | None = None) -> SeedRun:
    """Fine-tune along ``sequence`` and analyse every stage (:func:`analyse_stage`) for the
    ``general`` tasks, with the restoration after the first and the last stage (the two the
    summary reads: on a real model it is the costliest part); in the first stage, watch the states of
    ``settings.watch_prompts`` valid prompts per general task every ``settings.watch_every``
    steps (the overlay); with ``settings.checkpoint_every``, a :class:`Checkpoint` every that many
    steps of every stage.

    Training is :func:`ivedu.finetune.finetune_sequence` with ``training``'s settings for
    ``settings.method`` (LoRA merged after each stage; stage ``t`` seeded with
    ``sub_seed(seed, t)``). ``seed`` also draws the extraction prompts and the random controls.

    ``partial`` (:class:`ivedu.resume.PartialPiece`): keep the run's state after
    every stage there, and resume from the state kept there before: a run stopped mid-seed loses
    at most one stage. Each stage depends only on the model before it and its own seed, so a
    resumed run is the same run.
    """
    kept = partial.load(lm.model) if partial is not None else None
    if kept is None:
        start = extract_vectors(lm, general, settings.heads, settings.n_prompts, seed, extraction)
        stages = [Stage(0, None, None, compare_stage(lm.model, lm, general, start, start))]
        checkpoints: list[Checkpoint] = []
        resume = None
    else:
        start, data = _vectors_from_parts(kept.tensors, kept.data["start"]), kept.data
        stages, checkpoints = list(map(_stage_from_dict, data["stages"])), list(map(_checkpoint_from_dict,
                                                                                    data["checkpoints"]))
        resume = SequenceState(data["done"], kept.model, tuple(data["baseline"]), tuple(map(tuple, data["rows"])))
        if log is not None:
            log(f"seed {seed}: resumed after stage {data['done']}")
    prompts, owners = watch_prompts(general, settings.watch_prompts, fmt=lm.fmt)
    snapshots: list[tuple[int, torch.Tensor]] = []

    def watch(previous: nn.Module, stage: int):
        def record(step: int, model: nn.Module) -> None:
            snapshots.append((step, residual_states(model, lm.tokenizer, prompts)))

        def keep(step: int, model: nn.Module) -> None:
            if step > 0:  # step 0 is the previous stage's end, analysed already
                checkpoints.append(checkpoint(lm.model, lm.with_model(model), general, start, stage + 1, step, seed,
                                              settings, extraction))
                if log is not None:
                    log(f"seed {seed} stage {stage + 1} step {step}: IF "
                        f"{statistics.mean(r.if_exact_match for r in checkpoints[-1].rows.values()):.2f}")

        watchers = [(settings.watch_every, record)] if stage == 0 else []
        if settings.checkpoint_every is not None:
            watchers.append((settings.checkpoint_every, keep))
        return watch_all(watchers)

    def analyse(t: int, model: nn.Module, result: FinetuneResult) -> None:
        task, restore = sequence[t], t in (0, len(sequence) - 1)
        if log is not None:
            log(f"seed {seed} stage {t + 1} ({task.name}): trained {result.steps} steps in {result.seconds:.0f} s, "
                f"valid checks {[(s, round(em, 2)) for s, em in result.checks]}")
        rows, now = analyse_stage(lm.model, lm.with_model(model), general, start, task, seed, settings,
                                  restore=restore, extraction=extraction)
        points: tuple[OverlayPoint, ...] = ()
        if t == 0:
            snapshots.append((result.steps, residual_states(model, lm.tokenizer, prompts)))
            points = overlay(snapshots, owners, start, now.vectors[task.name].vector)
        stage = Stage(t + 1, task.name, result.steps, rows, points)
        stages.append(stage)
        if log is not None:
            restored = f", restored {stage.mean('restored.exact_match'):.2f}" if restore else ""
            log(f"seed {seed} stage {t + 1} ({task.name}, {result.steps} steps): IF "
                f"{stage.mean('if_exact_match'):.2f}{restored}")

    def keep(state: SequenceState) -> None:
        if partial is not None:
            tensors, meta = _vectors_as_parts(start)
            partial.save({"done": state.done, "baseline": state.baseline, "rows": state.rows, "start": meta,
                          "stages": [asdict(s) for s in stages], "checkpoints": [asdict(c) for c in checkpoints]},
                         state.model, tensors)

    trained = finetune_sequence(lm, sequence, training, settings.method, seed, objective_for=watch, on_stage=analyse,
                                keep=keep, resume=resume)
    return SeedRun(seed, tuple(stages), fit_r2(stages[1:], checkpoints), tuple(checkpoints),
                   tuple(float(x) for x in trained.baseline), tuple(tuple(float(x) for x in row) for row in trained.R))


@dataclass(frozen=True)
class StageSummary:
    """Means over seeds (of means over the general tasks) at one fine-tuned stage.

    ``if_finetuned``: instruction following; ``if_restored`` / ``if_random``: with the original
    vector / a random one added; ``if_subtracted``: with the newest task's vector subtracted;
    ``iv_cosine``, ``heads_jaccard``, ``hidden_cosine``: similarity to the original;
    ``restored_share``: the share of the lost instruction following that the original vector
    gives back (NaN where nothing was lost).
    """

    if_finetuned: float
    if_restored: float
    if_subtracted: float
    if_random: float
    iv_cosine: float
    heads_jaccard: float
    hidden_cosine: float
    restored_share: float


# StageSummary field -> the TaskAtStage field it averages.
SUMMARY_FIELDS = {"if_finetuned": "if_exact_match", "if_restored": "restored.exact_match",
                  "if_subtracted": "subtracted.exact_match", "if_random": "restored.random_exact_match",
                  "iv_cosine": "iv_cosine", "heads_jaccard": "heads_jaccard", "hidden_cosine": "hidden_cosine"}


def _r2_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """:func:`r_squared` of each row pair of ``x`` and ``y`` (``[replicates, points]``) at once."""
    xc, yc = x - x.mean(1, keepdims=True), y - y.mean(1, keepdims=True)
    sxx, syy, sxy = (xc * xc).sum(1), (yc * yc).sum(1), (xc * yc).sum(1)
    flat = (np.ptp(x, axis=1) == 0) | (np.ptp(y, axis=1) == 0)
    return np.where(flat, 0.0, sxy ** 2 / np.where(flat, 1.0, sxx * syy))


def tracking_lead(points: np.ndarray) -> np.ndarray:
    """``r2_iv - max(r2_hidden, r2_params)`` of :func:`fit_points` ``points`` (``[points, 4]``),
    or of each replicate of ``[replicates, points, 4]``: how far the vector's similarity tracks
    instruction following better than the stronger of the two baselines."""
    batch = points[None] if points.ndim == 2 else points
    y = batch[..., -1]
    r2 = [_r2_rows(batch[..., i], y) for i in range(len(FIT_MEASURES))]
    lead = r2[0] - np.maximum(r2[1], r2[2])
    return lead[0] if points.ndim == 2 else lead


def fits_interval(per_seed: Sequence[np.ndarray], n: int = 2000, seed: int = 0, level: float = 0.95) -> Effect:
    """Claim 3's effect with its percentile-bootstrap interval: the mean over seeds of
    :func:`tracking_lead`, each replicate resampling every seed's (task, checkpoint) points
    (``per_seed``: one :func:`fit_points` array per seed) with replacement, within the seed,
    drawn with numpy's generator seeded by ``seed``."""
    check_fraction("level", level)
    check_positive_int("n", n)
    check_seed("seed", seed)
    check_sequence("per_seed", per_seed)
    if not per_seed or any(len(points) < 3 for points in per_seed):
        raise ValueError("need at least one seed, each with at least 3 (task, checkpoint) points")
    rng = np.random.default_rng(seed)
    replicates = np.mean([tracking_lead(points[rng.integers(0, len(points), size=(n, len(points)))])
                          for points in per_seed], axis=0)
    low, high = np.quantile(replicates, [(1 - level) / 2, 1 - (1 - level) / 2])
    value = float(np.mean([tracking_lead(points) for points in per_seed]))
    return Effect(value, (float(low), float(high)), level)


def restoration_lead(runs: Sequence[SeedRun], index: int, n: int = 2000, seed: int = 0,
                     level: float = 0.95) -> Effect:
    """Claim 4's effect at stage ``index``: the mean over (task, seed) of the original vector's
    exact match minus the random control's, with a paired percentile-bootstrap interval
    (:func:`ivedu.controls.paired_bootstrap_interval`). A task skipped by the scale rule counts
    as 0: nothing was added."""
    check_sequence("runs", runs)
    check_int("index", index)
    rows = [row for run in runs for row in run.stages[index].rows.values()]
    restored = [field_value(row, "restored.exact_match") for row in rows]
    random = [field_value(row, "restored.random_exact_match") for row in rows]
    return Effect(statistics.mean(restored) - statistics.mean(random),
                  paired_bootstrap_interval(restored, random, n, seed, level), level)


@dataclass(frozen=True)
class DynamicsSummary:
    """Chapter 3's numbers over seeds.

    ``if_original``: instruction following of the original model; ``first``: after the first
    stage (chapter 1's fine-tuning, one new task), ``final``: after the whole sequence;
    ``overlay_layer``: the residual layer the overlay is read at, ``overlay_old_start`` ..
    ``overlay_new_end``: its projections at the first and the last snapshot of the first stage;
    ``fits``: the mean R² values (``n_points``: the fewest points of a seed).

    The claims' effects, each an :class:`ivedu.controls.Effect` with its 95% bootstrap
    interval: ``tracking`` (claim 3: :func:`fits_interval`), ``restored_lead`` /
    ``restored_lead_final`` (claim 4: :func:`restoration_lead` after the first stage and the
    sequence); ``skipped`` / ``skipped_final``: (task, seed) restorations the scale rule left
    unsteered; ``random_cost``: the largest random cost of a chosen cell (both stages);
    ``if_constant``: the mean over tasks of the constant answer's exact match on test.
    """

    if_original: float
    first: StageSummary
    final: StageSummary
    overlay_layer: int
    overlay_old_start: float
    overlay_old_end: float
    overlay_new_start: float
    overlay_new_end: float
    fits: Fits
    tracking: Effect
    restored_lead: Effect
    restored_lead_final: Effect
    skipped: int
    skipped_final: int
    random_cost: float | None
    if_constant: float | None

    def claims(self) -> dict:
        """Claims 3 and 4 as the scorecard reads them: ``{"claim3": ..., "claim4": ...}``."""
        def effect(e: Effect) -> dict:
            return {"effect": e.value, "interval": list(e.interval), "level": e.level}

        return {"claim3": {**effect(self.tracking), "n_points": self.fits.n_points},
                "claim4": {**effect(self.restored_lead), "final": effect(self.restored_lead_final),
                           "restored_share": self.first.restored_share,
                           "restored_share_final": self.final.restored_share, "skipped": self.skipped,
                           "skipped_final": self.skipped_final, "random_cost": self.random_cost,
                           "if_constant": self.if_constant}}


def restored_share(if_original: float, if_finetuned: float, if_restored: float) -> float:
    """The share of the instruction following lost to fine-tuning that restoration gives back
    (NaN where nothing was lost)."""
    for name, value in (("if_original", if_original), ("if_finetuned", if_finetuned), ("if_restored", if_restored)):
        check_number(name, value)
    lost = if_original - if_finetuned
    return (if_restored - if_finetuned) / lost if lost > 0 else float("nan")


def summarise(runs: Sequence[SeedRun], overlay_layer: int, n_boot: int = 2000) -> DynamicsSummary:
    """Means over seeds of the first stage, the final stage, the overlay at ``overlay_layer``
    and the R² values; the claims' effects with ``n_boot``-replicate bootstrap intervals (seed 0)."""
    if_original = statistics.mean(run.stages[0].mean("if_exact_match") for run in runs)

    def at(index: int) -> StageSummary:
        means = {key: statistics.mean(run.stages[index].mean(field) for run in runs)
                 for key, field in SUMMARY_FIELDS.items()}
        return StageSummary(**means, restored_share=restored_share(if_original, means["if_finetuned"],
                                                                    means["if_restored"]))

    def projection(point: int, which: str) -> float:
        return statistics.mean(getattr(run.stages[1].overlay[point], which)[overlay_layer] for run in runs)

    restored = [row.restored for run in runs for i in (1, -1) for row in run.stages[i].rows.values()]
    costs = [r.random_cost for r in restored if r.skipped is None and r.random_cost is not None]
    constants = [r.constant_em for r in restored if r.constant_em is not None]

    def skipped(index: int) -> int:
        return sum(row.restored.skipped is not None for run in runs for row in run.stages[index].rows.values())

    fits = Fits(*(statistics.mean(getattr(run.fits, f) for run in runs) for f in ("r2_iv", "r2_hidden", "r2_params")),
                n_points=min(run.fits.n_points for run in runs))
    return DynamicsSummary(if_original, at(1), at(-1), overlay_layer, projection(0, "old"), projection(-1, "old"),
                           projection(0, "new"), projection(-1, "new"), fits,
                           fits_interval([fit_points(run.stages[1:], run.checkpoints) for run in runs], n_boot),
                           restoration_lead(runs, 1, n_boot), restoration_lead(runs, -1, n_boot), skipped(1),
                           skipped(-1), max(costs) if costs else None,
                           statistics.mean(constants) if constants else None)
