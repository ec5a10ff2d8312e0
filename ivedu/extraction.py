"""Chapter 2's pipeline: scan a task's heads, build its instruction vector, test it.

This module ties :mod:`ivedu.mediation` (the scan) and :mod:`ivedu.intervention` (the
vector) to the world's tasks: which prompts are clean and which corrupted, which examples
extract the vector and which test it, and how the layer and scale are chosen (on the
``valid`` split) before the vector is reported on the ``test`` split.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

import torch

from ivedu.evaluation import demonstrations
from ivedu.generation import last_token_logits
from ivedu.intervention import (InstructionVector, instruction_vector, random_vector_like,
                                steered_exact_match, steered_first_token_accuracy)
from ivedu.mediation import HeadScan, first_answer_tokens, gold_probs, indirect_effects, mean_head_activations
from ivedu.prompts import (PromptFormat, bare_prompt, fewshot_prompt, instructed_prompt,
                           neutral_prompt, shuffled_fewshot_prompt)
from ivedu.settings import ExtractionSettings, sub_seed
from ivedu.world import Task

CLEAN_STYLES = ("instructed", "fewshot")
CORRUPTED_STYLES = ("removed", "shuffled", "neutral")


@dataclass(frozen=True)
class PromptSet:
    """Prompts and the answer each should produce."""

    prompts: tuple[str, ...]
    answers: tuple[str, ...]


def _examples(task: Task, split: str, n: int | None, rng: random.Random):
    examples = list(task.split(split))
    if not examples:
        raise ValueError(f"task {task.name!r} has no examples in split {split!r}")
    rng.shuffle(examples)
    return examples[:n] if n else examples


def clean_prompts(task: Task, split: str = "train", style: str = "instructed", n: int | None = 48,
                  n_demos: int = 4, seed: int = 0, *, fmt: PromptFormat) -> PromptSet:
    """Prompts on which the model does ``task``: its instruction (both phrasings, alternating)
    or ``n_demos`` demonstrations drawn from the train split."""
    if style not in CLEAN_STYLES:
        raise ValueError(f"unknown clean style {style!r}; choose one of {CLEAN_STYLES}")
    rng = random.Random(seed)
    examples = _examples(task, split, n, rng)
    if style == "instructed":
        prompts = [instructed_prompt(task, ex.input, i, fmt) for i, ex in enumerate(examples)]
    else:
        prompts = [fewshot_prompt(demonstrations(task, ex, n_demos, seed), ex.input, fmt) for ex in examples]
    return PromptSet(tuple(prompts), tuple(ex.output for ex in examples))


def corrupted_prompts(task: Task, split: str = "train", style: str = "removed", n: int | None = 48,
                      n_demos: int = 4, seed: int = 0, *, fmt: PromptFormat,
                      neutral: Sequence[str] | None = None) -> PromptSet:
    """Prompts on which the task is missing: ``removed`` (the bare query, no instruction and
    no demonstrations), ``shuffled`` (demonstrations with their answers shuffled) or
    ``neutral`` (the instruction replaced by random ``neutral`` words, which occur in many
    tasks' instructions: :func:`ivedu.prompts.neutral_words`)."""
    if style not in CORRUPTED_STYLES:
        raise ValueError(f"unknown corrupted style {style!r}; choose one of {CORRUPTED_STYLES}")
    rng = random.Random(seed + 1)
    examples = _examples(task, split, n, rng)
    if style == "removed":
        prompts = [bare_prompt(ex.input, fmt) for ex in examples]
    elif style == "neutral":
        if not neutral:
            raise ValueError("style='neutral' needs the neutral words: pass neutral=neutral_words(world.general)")
        prompts = [neutral_prompt(ex.input, neutral, rng, fmt=fmt) for ex in examples]
    else:
        prompts = [shuffled_fewshot_prompt(demonstrations(task, ex, n_demos, seed), ex.input, rng, fmt)
                   for ex in examples]
    return PromptSet(tuple(prompts), tuple(ex.output for ex in examples))


def mean_answer_prob(model, tokenizer, prompt_set: PromptSet) -> float:
    """Mean P(correct first answer token) over a prompt set."""
    logits = last_token_logits(model, tokenizer, prompt_set.prompts)
    return float(gold_probs(logits, first_answer_tokens(tokenizer, prompt_set.prompts, prompt_set.answers)).mean())


def scan_task(model, tokenizer, task: Task, clean: PromptSet, corrupted: PromptSet,
              progress: bool = False) -> HeadScan:
    """Mean clean head activations and every head's average indirect effect on ``corrupted``."""
    means = mean_head_activations(model, tokenizer, clean.prompts)
    effects = indirect_effects(model, tokenizer, corrupted.prompts, corrupted.answers, means, progress=progress)
    return HeadScan(task.name, effects.mean(0), means.cpu(),
                    corrupted_prob=mean_answer_prob(model, tokenizer, corrupted),
                    clean_prob=mean_answer_prob(model, tokenizer, clean))


def scan_tasks(model, tokenizer, tasks: Sequence[Task], n_prompts: int, seed: int = 0, *, fmt: PromptFormat,
               settings: ExtractionSettings = ExtractionSettings(), progress: bool = False) -> dict[str, HeadScan]:
    """Chapter 2's scan of every task in ``model`` as it is now: task name -> :class:`HeadScan`.

    Clean prompts in ``settings.clean_style`` (the instruction), corrupted prompts in
    ``settings.corrupted_style`` (the instruction removed), ``n_prompts`` of each from the
    train split, drawn with ``seed``. Every step that needs vectors starts here: chapter 2's
    extraction, chapter 3's re-extraction after each stage, chapter 4's new-task vectors and
    the cost measurement of chapter 5.
    """
    if not tasks:
        raise ValueError("no tasks to scan: give at least one task")
    return {t.name: scan_task(model, tokenizer, t,
                              clean_prompts(t, "train", settings.clean_style, n_prompts, seed=seed, fmt=fmt),
                              corrupted_prompts(t, "train", settings.corrupted_style, n_prompts, seed=seed, fmt=fmt),
                              progress=progress)
            for t in tasks}


def layer_scale_sweep(model, tokenizer, vectors: dict[str, InstructionVector], prompt_sets: dict[str, PromptSet],
                      layers: Sequence[int], scales: Sequence[float], site: str = "attention") -> torch.Tensor:
    """Mean first-token accuracy over tasks with each task's vector added: ``[layers, scales]``.

    ``prompt_sets[task]`` are prompts without the instruction (valid split: this is where
    the layer and scale are chosen, never on the test prompts).
    """
    grid = torch.zeros(len(layers), len(scales))
    for i, layer in enumerate(layers):
        for j, scale in enumerate(scales):
            grid[i, j] = sum(steered_first_token_accuracy(model, tokenizer, ps.prompts, ps.answers,
                                                          vectors[name].vector, layer, scale, site)
                             for name, ps in prompt_sets.items()) / len(prompt_sets)
    return grid


@dataclass(frozen=True)
class InterventionScores:
    """One task's test prompts without the instruction, under each condition.

    First-token accuracy (``*``) and greedy exact match (``*_em``), each in [0, 1]:
    ``clean`` with the instruction; ``corrupted`` without it; ``with_iv`` without it plus the
    task's vector; ``with_random`` plus a random vector of equal norm (mean over several
    random directions); ``with_other_task`` plus another task's vector.
    """

    task: str
    clean: float
    corrupted: float
    with_iv: float
    with_random: float
    with_other_task: float
    clean_em: float
    corrupted_em: float
    with_iv_em: float
    with_random_em: float
    with_other_task_em: float


def evaluate_intervention(model, tokenizer, task: Task, vector: InstructionVector, other: InstructionVector,
                          layer: int, scale: float, split: str = "test", n_random: int = 5, seed: int = 0,
                          site: str = "attention", *, fmt: PromptFormat) -> InterventionScores:
    """Score ``task`` on ``split`` without its instruction: bare, with its vector, with controls."""
    clean = clean_prompts(task, split, "instructed", n=None, seed=seed, fmt=fmt)
    bare = corrupted_prompts(task, split, "removed", n=None, seed=seed, fmt=fmt)

    def both(prompt_set: PromptSet, vec: torch.Tensor | None) -> tuple[float, float]:
        ft = steered_first_token_accuracy(model, tokenizer, prompt_set.prompts, prompt_set.answers,
                                          vec, layer, scale, site)
        em = steered_exact_match(model, tokenizer, prompt_set.prompts, prompt_set.answers, vec, layer, scale, site)
        return ft, em

    randoms = [both(bare, random_vector_like(vector.vector, sub_seed(seed, r))) for r in range(n_random)]
    scores = dict(zip(("clean", "clean_em"), both(clean, None)))
    scores.update(zip(("corrupted", "corrupted_em"), both(bare, None)))
    scores.update(zip(("with_iv", "with_iv_em"), both(bare, vector.vector)))
    scores.update(zip(("with_other_task", "with_other_task_em"), both(bare, other.vector)))
    scores["with_random"] = sum(ft for ft, _ in randoms) / n_random
    scores["with_random_em"] = sum(em for _, em in randoms) / n_random
    return InterventionScores(task=task.name, **scores)


def build_vectors(model, scans: dict[str, HeadScan], k: int) -> dict[str, InstructionVector]:
    """Each task's instruction vector from its own top-``k`` heads."""
    return {name: instruction_vector(model, scan.mean_activations, scan.top_heads(k), name)
            for name, scan in scans.items()}


@dataclass(frozen=True)
class Extraction:
    """Everything chapter 2 shows, for one seed.

    ``scans``: task -> :class:`HeadScan`; ``sweep``: ``[head counts, layers, scales]`` mean
    valid first-token accuracy with the vectors, over the layers
    ``settings.sweep_layers(n_layers)``; ``k``, ``layer``, ``scale``: the setting chosen on
    valid (``layer`` is a layer of the model, not an index into the sweep); ``vectors``:
    task -> vector at that ``k``; ``scores``: test results.
    """

    scans: dict[str, HeadScan]
    sweep: torch.Tensor
    k: int
    layer: int
    scale: float
    vectors: dict[str, InstructionVector]
    scores: list[InterventionScores]
    settings: ExtractionSettings

    def mean(self, field: str) -> float:
        """Mean of one :class:`InterventionScores` field over tasks."""
        return sum(getattr(s, field) for s in self.scores) / len(self.scores)


def sweep(model, tokenizer, scans: dict[str, HeadScan], tasks: Sequence[Task], seed: int = 0, *, fmt: PromptFormat,
          settings: ExtractionSettings = ExtractionSettings()) -> torch.Tensor:
    """Mean valid first-token accuracy of instruction-less prompts with each task's vector added:
    ``[head counts, layers, scales]`` over ``settings.head_counts`` x
    ``settings.sweep_layers(n_layers)`` x ``settings.scales``."""
    valid = {t.name: corrupted_prompts(t, "valid", "removed", n=None, seed=seed, fmt=fmt) for t in tasks}
    layers = settings.sweep_layers(next(iter(scans.values())).effects.shape[0])
    return torch.stack([layer_scale_sweep(model, tokenizer, build_vectors(model, scans, k), valid,
                                          layers, settings.scales, settings.site)
                        for k in settings.head_counts])


def best_setting(grid: torch.Tensor, settings: ExtractionSettings, n_layers: int) -> tuple[int, int, float]:
    """``(k, layer, scale)`` of the best cell of a :func:`sweep` grid; ties go to the first cell
    (fewest heads, lowest layer, smallest scale). ``layer`` is a layer of the model."""
    layers = settings.sweep_layers(n_layers)
    k_index, rest = divmod(int(grid.flatten().argmax()), len(layers) * len(settings.scales))
    layer_index, scale_index = divmod(rest, len(settings.scales))
    return settings.head_counts[k_index], layers[layer_index], settings.scales[scale_index]


def score_vectors(model, tokenizer, tasks: Sequence[Task], vectors: dict[str, InstructionVector], layer: int,
                 scale: float, seed: int = 0, *, fmt: PromptFormat,
                 settings: ExtractionSettings = ExtractionSettings()) -> list[InterventionScores]:
    """Every task's test scores at one setting (:func:`evaluate_intervention`); the other-task
    control for task ``i`` is task ``i + 1``'s vector (cyclically)."""
    names = [t.name for t in tasks]
    return [evaluate_intervention(model, tokenizer, t, vectors[t.name], vectors[names[(i + 1) % len(names)]],
                                  layer, scale, "test", settings.n_random, seed, settings.site, fmt=fmt)
            for i, t in enumerate(tasks)]


def extract_and_test(model, tokenizer, tasks: Sequence[Task], seed: int = 0,
                     settings: ExtractionSettings = ExtractionSettings(), progress: bool = False, *,
                     fmt: PromptFormat) -> Extraction:
    """Scan every task on train prompts, choose k / layer / scale on valid, report on test.

    :func:`scan_tasks`, then :func:`sweep` and :func:`best_setting` on the valid split, then
    :func:`score_vectors` on the test split. The layers tried are ``settings.layers``
    (``None``: every layer of the model).
    """
    if len(tasks) < 2:
        raise ValueError("give at least two tasks: each task's vector is controlled by another task's")
    scans = scan_tasks(model, tokenizer, tasks, settings.n_prompts, seed, fmt=fmt, settings=settings,
                       progress=progress)
    grid = sweep(model, tokenizer, scans, tasks, seed, fmt=fmt, settings=settings)
    k, layer, scale = best_setting(grid, settings, scans[tasks[0].name].effects.shape[0])
    vectors = build_vectors(model, scans, k)
    scores = score_vectors(model, tokenizer, tasks, vectors, layer, scale, seed, fmt=fmt, settings=settings)
    return Extraction(scans, grid, k, layer, scale, vectors, scores, settings)
