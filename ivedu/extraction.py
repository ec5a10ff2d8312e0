"""Chapter 2's pipeline: scan a task's heads, build its instruction vector, test it.

This module ties :mod:`ivedu.mediation` (the scan) and :mod:`ivedu.intervention` (the
vector) to the world's tasks: which prompts are clean and which corrupted, which examples
extract the vector and which test it, and how the layer and scale are chosen (on the
``valid`` split) before the vector is reported on the ``test`` split.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import torch

from ivedu.arguments import (check_int, check_number, check_optional_positive_int, check_positive_int, check_seed,
                             check_sequence, check_str, check_tensor, check_unique)
from ivedu.controls import (balanced_accuracy, bootstrap_interval, constant_answer, grouped_bootstrap_interval,
                            starts_right_share)
from ivedu.evaluation import demonstrations, exact_match, normalise_answer
from ivedu.generation import last_token_logits
from ivedu.intervention import (InstructionVector, Steer, Steering, instruction_vector, random_vector_like,
                                steered_answers, steered_answers_each, steered_first_token_accuracy,
                                steered_first_token_hits, steered_first_token_hits_each)
from ivedu.mediation import HeadScan, first_answer_tokens, gold_probs, indirect_effects, mean_head_activations
from ivedu.prompts import (PromptFormat, bare_prompt, fewshot_prompt, instructed_prompt,
                           neutral_prompt, shuffled_fewshot_prompt)
from ivedu.settings import ExtractionSettings, sub_seed
from ivedu.study import ModelUnderStudy
from ivedu.world import Task

CLEAN_STYLES = ("instructed", "fewshot")
CORRUPTED_STYLES = ("removed", "shuffled", "neutral")


@dataclass(frozen=True)
class PromptSet:
    """Prompts and the answer each should produce; ``inputs``: each prompt's example input
    (empty for a prompt set built by hand)."""

    prompts: tuple[str, ...]
    answers: tuple[str, ...]
    inputs: tuple[str, ...] = ()


def _examples(task: Task, split: str, n: int | None, rng: random.Random):
    check_str("split", split)
    examples = list(task.split(split))
    if not examples:
        raise ValueError(f"task {task.name!r} has no examples in split {split!r}")
    rng.shuffle(examples)
    return examples[:n] if n else examples


def clean_prompts(task: Task, split: str = "train", style: str = "instructed", n: int | None = 48,
                  n_demos: int = 4, seed: int = 0, *, fmt: PromptFormat) -> PromptSet:
    """Prompts on which the model does ``task``: its instruction (both phrasings, alternating)
    or ``n_demos`` demonstrations drawn from the train split."""
    _check_draw(n, n_demos, seed)
    if style not in CLEAN_STYLES:
        raise ValueError(f"unknown clean style {style!r}; choose one of {CLEAN_STYLES}")
    rng = random.Random(seed)
    examples = _examples(task, split, n, rng)
    if style == "instructed":
        prompts = [instructed_prompt(task, ex.input, i, fmt) for i, ex in enumerate(examples)]
    else:
        prompts = [fewshot_prompt(demonstrations(task, ex, n_demos, seed), ex.input, fmt) for ex in examples]
    return PromptSet(tuple(prompts), tuple(ex.output for ex in examples), tuple(ex.input for ex in examples))


def corrupted_prompts(task: Task, split: str = "train", style: str = "removed", n: int | None = 48,
                      n_demos: int = 4, seed: int = 0, *, fmt: PromptFormat,
                      neutral: Sequence[str] | None = None) -> PromptSet:
    """Prompts on which the task is missing: ``removed`` (the bare query, no instruction and
    no demonstrations), ``shuffled`` (demonstrations with their answers shuffled) or
    ``neutral`` (the instruction replaced by random ``neutral`` words, which occur in many
    tasks' instructions: :func:`ivedu.prompts.neutral_words`)."""
    _check_draw(n, n_demos, seed)
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
    return PromptSet(tuple(prompts), tuple(ex.output for ex in examples), tuple(ex.input for ex in examples))


def _check_draw(n: int | None, n_demos: int, seed: int) -> None:
    check_optional_positive_int("n", n)
    check_int("n_demos", n_demos, 0)
    check_seed("seed", seed)


def _check_tasks(tasks: Sequence[Task]) -> None:
    """``tasks`` a list of tasks, each named once (results are keyed by name)."""
    check_sequence("tasks", tasks)
    for i, task in enumerate(tasks):
        if not isinstance(task, Task):
            raise TypeError(f"tasks[{i}] must be a Task, got {type(task).__name__}: pass world.task(name)")
    check_unique("tasks' names", [t.name for t in tasks])


def mean_answer_prob(lm: ModelUnderStudy, prompt_set: PromptSet) -> float:
    """Mean P(correct first answer token) over a prompt set."""
    logits = last_token_logits(lm.model, lm.tokenizer, prompt_set.prompts)
    return float(gold_probs(logits, first_answer_tokens(lm.tokenizer, prompt_set.prompts, prompt_set.answers)).mean())


def scan_task(lm: ModelUnderStudy, task: Task, clean: PromptSet, corrupted: PromptSet,
              progress: bool = False) -> HeadScan:
    """Mean clean head activations and every head's average indirect effect on ``corrupted``."""
    model, tokenizer = lm.model, lm.tokenizer
    means = mean_head_activations(model, tokenizer, clean.prompts)
    effects = indirect_effects(model, tokenizer, corrupted.prompts, corrupted.answers, means, progress=progress)
    return HeadScan(task.name, effects.mean(0), means.cpu(),
                    corrupted_prob=mean_answer_prob(lm, corrupted), clean_prob=mean_answer_prob(lm, clean))


def scan_tasks(lm: ModelUnderStudy, tasks: Sequence[Task], n_prompts: int, seed: int, settings: ExtractionSettings,
               progress: bool = False) -> dict[str, HeadScan]:
    """Chapter 2's scan of every task in ``lm.model`` as it is now: task name -> :class:`HeadScan`.

    Clean prompts in ``settings.clean_style`` (the instruction), corrupted prompts in
    ``settings.corrupted_style`` (the instruction removed), ``n_prompts`` of each from the
    train split, drawn with ``seed``, all in ``lm.fmt``. Every step that needs vectors starts here: chapter 2's
    extraction, chapter 3's re-extraction after each stage, chapter 4's new-task vectors and
    the cost measurement of chapter 5.
    """
    _check_tasks(tasks)
    if not tasks:
        raise ValueError("no tasks to scan: give at least one task")
    check_positive_int("n_prompts", n_prompts)
    check_seed("seed", seed)
    return {t.name: scan_task(lm, t,
                              clean_prompts(t, "train", settings.clean_style, n_prompts, seed=seed, fmt=lm.fmt),
                              corrupted_prompts(t, "train", settings.corrupted_style, n_prompts, seed=seed, fmt=lm.fmt),
                              progress=progress)
            for t in tasks}


def layer_scale_sweep(lm: ModelUnderStudy, vectors: dict[str, InstructionVector], prompt_sets: dict[str, PromptSet],
                      layers: Sequence[int], scales: Sequence[float], site: str) -> torch.Tensor:
    """Mean first-token accuracy over tasks with each task's vector added at ``site``: ``[layers, scales]``.

    ``prompt_sets[task]`` are prompts without the instruction (valid split: this is where
    the layer and scale are chosen, never on the test prompts).
    """
    cells = list(itertools.product(layers, scales))
    accuracy = {name: dict(zip(cells, _accuracies(lm, ps,
                                                  [(vectors[name].vector, Steering(*cell, site)) for cell in cells])))
                for name, ps in prompt_sets.items()}
    grid = torch.zeros(len(layers), len(scales))
    for i, layer in enumerate(layers):
        for j, scale in enumerate(scales):
            grid[i, j] = sum(accuracy[name][layer, scale] for name in prompt_sets) / len(prompt_sets)
    return grid


def _accuracies(lm: ModelUnderStudy, prompt_set: PromptSet, steers: Sequence[Steer]) -> list[float]:
    """First-token accuracy on ``prompt_set`` under each steering, the prompts run once for all."""
    return [sum(hits) / len(hits)
            for hits in steered_first_token_hits_each(lm, prompt_set.prompts, prompt_set.answers, steers)]


@dataclass(frozen=True)
class InterventionScores:
    """One task's test prompts without the instruction, under each condition.

    First-token accuracy (``*``) and greedy exact match (``*_em``), each in [0, 1]:
    ``clean`` with the instruction; ``corrupted`` without it; ``with_iv`` without it plus the
    task's vector; ``with_random`` plus a random vector of equal norm (mean over several
    random directions); ``with_other_task`` plus another task's vector.

    The shortcut controls (:mod:`ivedu.controls`; ``None`` or empty when not measured): a
    vector that makes the model give one label to every prompt must not count as carrying a
    task whose answers are mostly that label. ``constant_answer``: the train split's most
    frequent answer; ``constant_em``: its exact match on these test examples;
    ``with_iv_balanced`` / ``corrupted_balanced``: balanced accuracy with the vector and bare
    (``None`` for tasks with many distinct answers); ``with_iv_starts_right``: share of answers
    with the vector whose first token is right and whole answer not. Per test example, in
    order: ``inputs``, ``golds``, ``answers_with_iv`` (the greedy answers with the vector) and
    ``random_hits`` (exact match with a random vector, mean over the random directions) and
    ``bare_hits`` (exact match without a vector).
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
    constant_answer: str = ""
    constant_em: float | None = None
    with_iv_balanced: float | None = None
    corrupted_balanced: float | None = None
    with_iv_starts_right: float | None = None
    answers_with_iv: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()
    golds: tuple[str, ...] = ()
    random_hits: tuple[float, ...] = ()
    bare_hits: tuple[float, ...] = ()

    @property
    def carries_task(self) -> bool | None:
        """Whether the vector beats the constant answer, a random vector of equal norm and the bare
        prompt by exact match (a vector that leaves a task the model does bare as it was carries
        nothing); ``None`` when the constant answer was not measured."""
        if self.constant_em is None:
            return None
        return self.with_iv_em > max(self.constant_em, self.with_random_em, self.corrupted_em)

    def per_example(self) -> dict[str, list[float]]:
        """Per test example (in order): exact match with the vector (``with_iv``), of the constant
        answer (``constant``), with a random vector (``random``, mean over directions) and bare
        (``bare``, no vector)."""
        constant = normalise_answer(self.constant_answer)
        return {"with_iv": [float(h) for h in exact_match(self.answers_with_iv, self.golds)],
                "constant": [float(normalise_answer(g) == constant) for g in self.golds],
                "random": list(self.random_hits), "bare": list(self.bare_hits)}


def evaluate_intervention(lm: ModelUnderStudy, task: Task, vector: InstructionVector, other: InstructionVector,
                          steering: Steering, seed: int, *, n_random: int, split: str = "test") -> InterventionScores:
    """Score ``task`` on ``split`` without its instruction: bare, and with each vector added as
    ``steering`` says -- its own and the controls (``n_random`` random vectors of equal norm drawn
    with ``seed``, another task's vector, and the constant answer)."""
    clean = clean_prompts(task, split, "instructed", n=None, seed=seed, fmt=lm.fmt)
    bare = corrupted_prompts(task, split, "removed", n=None, seed=seed, fmt=lm.fmt)

    def run(prompt_set: PromptSet, vec: torch.Tensor | None) -> tuple[list[bool], list[str], list[bool]]:
        firsts = steered_first_token_hits(lm, prompt_set.prompts, prompt_set.answers, vec, steering)
        answers = steered_answers(lm, prompt_set.prompts, prompt_set.answers, vec, steering)
        return firsts, answers, exact_match(answers, prompt_set.answers)

    def mean(flags: Sequence[bool | float]) -> float:
        return sum(flags) / len(flags)

    def run_each(prompt_set: PromptSet, vectors: Sequence[torch.Tensor | None]) -> list:
        """:func:`run` for each vector, the prompts' positions before the last computed once for all."""
        steers = [(vec, steering) for vec in vectors]
        firsts = steered_first_token_hits_each(lm, prompt_set.prompts, prompt_set.answers, steers)
        answers = steered_answers_each(lm, prompt_set.prompts, prompt_set.answers, steers)
        return [(f, a, exact_match(a, prompt_set.answers)) for f, a in zip(firsts, answers)]

    clean_ft, _, clean_ex = run(clean, None)
    (bare_ft, bare_answers, bare_ex), (iv_ft, iv_answers, iv_ex), (other_ft, _, other_ex), *randoms = run_each(
        bare, [None, vector.vector, other.vector]
        + [random_vector_like(vector.vector, sub_seed(seed, r)) for r in range(n_random)])
    random_hits = tuple(sum(ex[i] for _, _, ex in randoms) / n_random for i in range(len(bare.prompts)))
    constant = constant_answer(task)
    return InterventionScores(
        task=task.name, clean=mean(clean_ft), corrupted=mean(bare_ft), with_iv=mean(iv_ft),
        with_random=sum(mean(ft) for ft, _, _ in randoms) / n_random, with_other_task=mean(other_ft),
        clean_em=mean(clean_ex), corrupted_em=mean(bare_ex), with_iv_em=mean(iv_ex),
        with_random_em=sum(mean(ex) for _, _, ex in randoms) / n_random, with_other_task_em=mean(other_ex),
        constant_answer=constant, constant_em=mean(exact_match([constant] * len(bare.answers), bare.answers)),
        with_iv_balanced=balanced_accuracy(iv_answers, bare.answers),
        corrupted_balanced=balanced_accuracy(bare_answers, bare.answers),
        with_iv_starts_right=starts_right_share(iv_ft, iv_ex),
        answers_with_iv=tuple(iv_answers), inputs=bare.inputs, golds=bare.answers, random_hits=random_hits,
        bare_hits=tuple(float(h) for h in bare_ex))


def build_vectors(model, scans: dict[str, HeadScan], k: int) -> dict[str, InstructionVector]:
    """Each task's instruction vector from its own top-``k`` heads."""
    check_positive_int("k", k)
    return {name: instruction_vector(model, scan.mean_activations, scan.top_heads(k), name)
            for name, scan in scans.items()}


@dataclass(frozen=True)
class Extraction:
    """Everything chapter 2 shows, for one seed.

    ``scans``: task -> :class:`HeadScan`; ``sweep``: ``[head counts, layers, scales]`` mean
    valid first-token accuracy with the vectors, over the layers
    ``settings.sweep_layers(n_layers)``; ``k``, ``layer``, ``scale``: the setting chosen on
    valid (``layer`` is a layer of the model, not an index into the sweep); ``vectors``:
    task -> vector at that ``k``; ``scores``: test results; ``random_cost``: ``[head counts,
    layers, scales]`` what a random vector of each cell's norm costs the model's instructed
    valid accuracy (:func:`random_vector_cost`; ``None`` when the scale rule is off).
    """

    scans: dict[str, HeadScan]
    sweep: torch.Tensor
    k: int
    layer: int
    scale: float
    vectors: dict[str, InstructionVector]
    scores: list[InterventionScores]
    settings: ExtractionSettings
    random_cost: torch.Tensor | None = None

    def mean(self, field: str) -> float:
        """Mean of one :class:`InterventionScores` field over tasks."""
        return sum(getattr(s, field) for s in self.scores) / len(self.scores)

    @property
    def steering(self) -> Steering:
        """The chosen layer and scale, at ``settings.site``: where the vectors were tested."""
        return Steering(self.layer, self.scale, self.settings.site)

    @property
    def chosen_random_cost(self) -> float | None:
        """The random-vector cost of the chosen cell (``None`` when the scale rule is off)."""
        if self.random_cost is None:
            return None
        n_layers = next(iter(self.scans.values())).effects.shape[0]
        layers = self.settings.sweep_layers(n_layers)
        return float(self.random_cost[self.settings.head_counts.index(self.k), layers.index(self.layer),
                                      self.settings.scales.index(self.scale)])


def sweep(lm: ModelUnderStudy, scans: dict[str, HeadScan], tasks: Sequence[Task], seed: int,
          settings: ExtractionSettings) -> torch.Tensor:
    """Mean valid first-token accuracy of instruction-less prompts with each task's vector added:
    ``[head counts, layers, scales]`` over ``settings.head_counts`` x
    ``settings.sweep_layers(n_layers)`` x ``settings.scales``."""
    valid = {t.name: corrupted_prompts(t, "valid", "removed", n=None, seed=seed, fmt=lm.fmt) for t in tasks}
    layers = settings.sweep_layers(next(iter(scans.values())).effects.shape[0])
    return torch.stack([layer_scale_sweep(lm, build_vectors(lm.model, scans, k), valid, layers, settings.scales,
                                          settings.site)
                        for k in settings.head_counts])


def random_vector_cost(lm: ModelUnderStudy, scans: dict[str, HeadScan], tasks: Sequence[Task], seed: int,
                       settings: ExtractionSettings) -> torch.Tensor:
    """What a random vector costs the model where it does the task: ``[head counts, layers,
    scales]``, the mean over tasks of the instructed valid prompts' first-token accuracy
    without steering minus with a random vector added at that layer and scale.

    Each task's random direction is fixed (seeded by ``seed`` and the task's place) and takes
    the norm of the task's ``k``-head vector in that cell, as the random control of
    :func:`evaluate_intervention` does. A cell where noise of the vector's size already breaks
    instructed prompts is one where adding anything is destructive, and a gain there says
    little (:func:`scale_allowed`)."""
    instructed = {t.name: clean_prompts(t, "valid", "instructed", n=None, seed=seed, fmt=lm.fmt) for t in tasks}
    layers = settings.sweep_layers(next(iter(scans.values())).effects.shape[0])
    base = {name: steered_first_token_accuracy(lm, ps.prompts, ps.answers, None, None)
            for name, ps in instructed.items()}
    grid = torch.zeros(len(settings.head_counts), len(layers), len(settings.scales))
    cells = list(itertools.product(layers, settings.scales))
    for a, k in enumerate(settings.head_counts):
        vectors = build_vectors(lm.model, scans, k)
        randoms = {name: random_vector_like(vectors[name].vector, sub_seed(seed, i)) for i, name in enumerate(instructed)}
        steers = {name: [(randoms[name], Steering(*cell, settings.site)) for cell in cells] for name in instructed}
        steered = {name: dict(zip(cells, _accuracies(lm, ps, steers[name])))
                   for name, ps in instructed.items()}
        for b, layer in enumerate(layers):
            for c, scale in enumerate(settings.scales):
                grid[a, b, c] = sum(base[name] - steered[name][layer, scale] for name in instructed) / len(instructed)
    return grid


def scale_allowed(cost_grid: torch.Tensor, max_cost: float) -> torch.Tensor:
    """The scale rule: the cells (boolean, shaped like ``cost_grid``) where a random vector of the
    vector's norm costs instructed accuracy at most ``max_cost`` (:func:`random_vector_cost`)."""
    check_tensor("cost_grid", cost_grid, floating=True)
    check_number("max_cost", max_cost)
    return cost_grid <= max_cost


def best_setting(grid: torch.Tensor, settings: ExtractionSettings, n_layers: int,
                 allowed: torch.Tensor | None = None) -> tuple[int, int, float]:
    """``(k, layer, scale)`` of the best cell of a :func:`sweep` grid; ties go to the first cell
    (fewest heads, lowest layer, smallest scale). ``layer`` is a layer of the model.

    ``allowed``: a boolean mask shaped like ``grid`` (:func:`scale_allowed`); a cell outside it
    is never chosen, however well it scores."""
    layers = settings.sweep_layers(n_layers)
    if allowed is not None:
        if allowed.shape != grid.shape:
            raise ValueError(f"the allowed mask has shape {tuple(allowed.shape)}, the grid {tuple(grid.shape)}")
        if not allowed.any():
            raise ValueError("no cell of the sweep passes the scale rule (a random vector of the vector's norm "
                             f"costs instructed accuracy more than max_random_cost={settings.max_random_cost} "
                             "everywhere): add smaller ExtractionSettings.scales, fewer head_counts or other "
                             "layers, or raise max_random_cost")
        grid = torch.where(allowed, grid, torch.tensor(float("-inf"), dtype=grid.dtype))
    k_index, rest = divmod(int(grid.flatten().argmax()), len(layers) * len(settings.scales))
    layer_index, scale_index = divmod(rest, len(settings.scales))
    return settings.head_counts[k_index], layers[layer_index], settings.scales[scale_index]


def score_vectors(lm: ModelUnderStudy, tasks: Sequence[Task], vectors: dict[str, InstructionVector],
                  steering: Steering, seed: int, settings: ExtractionSettings) -> list[InterventionScores]:
    """Every task's test scores with its vector added as ``steering`` says
    (:func:`evaluate_intervention`, ``settings.n_random`` random controls); the other-task
    control for task ``i`` is task ``i + 1``'s vector (cyclically)."""
    names = [t.name for t in tasks]
    return [evaluate_intervention(lm, t, vectors[t.name], vectors[names[(i + 1) % len(names)]], steering, seed,
                                  n_random=settings.n_random, split="test")
            for i, t in enumerate(tasks)]


def extract_and_test(lm: ModelUnderStudy, tasks: Sequence[Task], seed: int, settings: ExtractionSettings,
                     progress: bool = False) -> Extraction:
    """Scan every task on train prompts, choose k / layer / scale on valid, report on test.

    :func:`scan_tasks`, then :func:`sweep` and :func:`best_setting` on the valid split, then
    :func:`score_vectors` on the test split. The layers tried are ``settings.layers``
    (``None``: every layer of the model). The scale rule: only cells where a random vector of
    the vector's norm costs instructed valid accuracy at most ``settings.max_random_cost`` may
    be chosen (:func:`random_vector_cost`; ``None``: no rule). Where no cell passes, the vectors
    are tested at the cell a random vector costs least, and the chosen cell's cost
    (:attr:`Extraction.chosen_random_cost`) shows the rule broken: :func:`claim2_summary`'s
    ``scale_rule_met`` is then false, and the scorecard fails the claim's check. A seed is never
    dropped for it.
    """
    _check_tasks(tasks)
    if len(tasks) < 2:
        raise ValueError("give at least two tasks: each task's vector is controlled by another task's")
    check_seed("seed", seed)
    scans = scan_tasks(lm, tasks, settings.n_prompts, seed, settings, progress=progress)
    grid = sweep(lm, scans, tasks, seed, settings)
    cost, allowed = None, None
    if settings.max_random_cost is not None:
        cost = random_vector_cost(lm, scans, tasks, seed, settings)
        allowed = scale_allowed(cost, settings.max_random_cost)
        if not allowed.any():  # no safe cell: test at the least destructive, which the summary reports as unsafe
            allowed = cost == cost.min()
    k, layer, scale = best_setting(grid, settings, scans[tasks[0].name].effects.shape[0], allowed)
    vectors = build_vectors(lm.model, scans, k)
    scores = score_vectors(lm, tasks, vectors, Steering(layer, scale, settings.site), seed, settings)
    return Extraction(scans, grid, k, layer, scale, vectors, scores, settings, cost)


def controls_row(scores: InterventionScores, n_top: int = 5) -> dict:
    """One task's shortcut controls for a result file, kept small: exact match with the vector,
    bare, with a random vector and of the constant answer, balanced accuracies, the
    starts-right share, ``carries_task``, the ``n_top`` most frequent answers with the vector
    (``[answer, count]``) and ``n_top`` example rows (input, gold, answer with the vector)."""
    fields = ("corrupted_em", "with_iv_em", "with_random_em", "constant_answer", "constant_em",
              "with_iv_balanced", "corrupted_balanced", "with_iv_starts_right", "carries_task")
    out = {f: getattr(scores, f) for f in fields}
    out["top_answers_with_iv"] = [list(pair) for pair in Counter(scores.answers_with_iv).most_common(n_top)]
    out["examples"] = [{"input": x, "gold": g, "answer": a}
                       for x, g, a in list(zip(scores.inputs, scores.golds, scores.answers_with_iv))[:n_top]]
    return out


def format_answers(scores: Sequence[InterventionScores], n_top: int = 4, n_rows: int = 3) -> str:
    """What the model answers to instruction-less test prompts with each task's vector added:
    per task, its exact match beside the constant answer's, the random vector's and the bare
    prompt's, whether it beats all three (``carries``), its ``n_top`` most frequent answers with
    their counts, and ``n_rows`` example rows (input, gold, answer). A vector that pushes one
    label shows up here as one answer given to every prompt, whatever the gold."""
    lines = []
    for s in scores:
        if not s.answers_with_iv:
            raise ValueError(f"task {s.task!r} has no kept answers: score it with evaluate_intervention")
        counts = ", ".join(f"{a!r} x{n}" for a, n in Counter(s.answers_with_iv).most_common(n_top))
        lines.append(f"{s.task}: exact match with the vector {s.with_iv_em:.2f} (constant answer "
                     f"{s.constant_answer!r} {s.constant_em:.2f}, random vector {s.with_random_em:.2f}, bare "
                     f"{s.corrupted_em:.2f}; carries: {'yes' if s.carries_task else 'no'})")
        lines.append(f"    answers ({len(s.answers_with_iv)}): {counts}")
        lines += [f"    {x!r:<28} gold {g!r:<16} -> {a!r}"
                  for x, g, a in list(zip(s.inputs, s.golds, s.answers_with_iv))[:n_rows]]
    return "\n".join(lines)


# Claim 2's controls, in the order a tie is broken: the constant answer, a random vector of the
# vector's norm, and the bare prompt (no vector at all).
CONTROLS = ("constant", "random", "bare")


def claim2_summary(results: Sequence[Extraction], n_boot: int = 2000, level: float = 0.95) -> dict:
    """Chapter 2's claim judged against its shortcuts, over seeds and test examples.

    Per task, the strongest control is the constant answer, the random vector or the bare prompt,
    whichever has the highest exact match over all seeds; the effect is the vector's exact match minus that
    control's, with a paired percentile-bootstrap interval over (seed, example). Overall: the
    mean of the tasks' effects, each task resampled within itself. ``tasks_carried``: tasks
    whose vector beats all three by exact match on every seed (:attr:`InterventionScores.carries_task`).
    ``random_cost``: the largest random-vector cost of a chosen cell over seeds, against
    ``max_random_cost`` (the scale rule; ``None`` when it is off).
    """
    check_sequence("results", results)
    if not results:
        raise ValueError("no extractions to summarise")
    check_positive_int("n_boot", n_boot)
    check_number("level", level, above=0.0, below=1.0)
    names = [s.task for s in results[0].scores]
    items: dict[str, dict[str, list[float]]] = {n: {"with_iv": [], "constant": [], "random": [], "bare": []}
                                                for n in names}
    carried = {n: True for n in names}
    for result in results:
        for s in result.scores:
            if s.constant_em is None or not s.answers_with_iv:
                raise ValueError(f"task {s.task!r} has no shortcut controls: score it with evaluate_intervention")
            for key, values in s.per_example().items():
                items[s.task][key] += values
            carried[s.task] = carried[s.task] and bool(s.carries_task)
    per_task, diffs = {}, []
    for i, name in enumerate(names):
        it = items[name]
        control = max(CONTROLS, key=lambda c: sum(it[c]))
        diff = [a - b for a, b in zip(it["with_iv"], it[control])]
        diffs.append(diff)
        per_task[name] = {"effect": sum(diff) / len(diff), "interval": list(bootstrap_interval(diff, n_boot, i, level)),
                          "strongest_control": control}
    costs = [r.chosen_random_cost for r in results]
    max_cost = results[0].settings.max_random_cost
    rule_off = max_cost is None or any(c is None for c in costs)
    return {"tasks_carried": [n for n in names if carried[n]], "n_tasks": len(names),
            "effect": sum(p["effect"] for p in per_task.values()) / len(per_task),
            "interval": list(grouped_bootstrap_interval(diffs, n_boot, 0, level)), "level": level,
            "strongest_control": {n: p["strongest_control"] for n, p in per_task.items()}, "per_task": per_task,
            "random_cost": None if rule_off else max(costs), "max_random_cost": max_cost,
            "scale_rule_met": None if rule_off else max(costs) <= max_cost}
