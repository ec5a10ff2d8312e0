"""Fine-tuning on a new task: full fine-tuning or LoRA, on one task or on a sequence of tasks.

This is the step of the paper that causes forgetting: a model that follows many instructions
is fine-tuned on one new task, with no data from the old ones. Training sequences are the
new task's train split written as instructed prompts (every instruction phrasing), with the
loss on the answer tokens only (:func:`ivedu.corpus.instructed_sequence`).

Fine-tuning never modifies the caller's model: :func:`finetune` trains a deep copy, so a
chapter can score the model before and after side by side. Everything is deterministic for a
seed: the seed fixes the batch order (a ``random.Random``) and the LoRA initialisation
(``torch.manual_seed``); it never touches the model that is being fine-tuned.
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ivedu.arguments import (check_nonempty, check_number, check_optional_positive_int, check_positive_int,
                             check_seed, check_strs)
from ivedu.checks import check_finite_loss
from ivedu.corpus import TrainingSequence, collate, instructed_sequence
from ivedu.evaluation import AbilityScores, exact_match_score, score_abilities
from ivedu.generation import model_device
from ivedu.runtime import peft_quietly
from ivedu.settings import FinetuneSettings, sub_seed
from ivedu.study import ModelUnderStudy
from ivedu.world import Task

METHODS = ("full", "lora")
SCHEDULES = ("linear", "constant")

# A training objective: ``objective(model, batch, step) -> scalar loss`` for the model being
# trained, a batch from :func:`ivedu.corpus.collate` (on the model's device) and the step index.
# The default is the model's own cross-entropy on the answer tokens, ``model(**batch).loss``;
# continual-learning methods (:mod:`ivedu.guided`, :mod:`ivedu.continual`) add their terms here.
LossFn = Callable[[nn.Module, dict, int], torch.Tensor]


@dataclass
class FinetuneResult:
    """A fine-tuned copy of a model and how its training went.

    ``model`` is a new object; for ``method="lora"`` it is a peft ``PeftModel`` whose base
    weights are the original ones, untouched, plus trainable adapters.
    ``losses[i]`` is the mean cross-entropy (nats per answer token) of step ``i``'s batch;
    ``steps`` is how many steps ran (fewer than asked when early stopping stopped it), and
    ``checks`` the early-stopping scores as ``(step, exact match)`` pairs.
    """

    model: nn.Module
    task: str
    method: str
    steps: int
    lr: float
    batch_size: int
    seed: int
    trainable_params: int
    losses: list[float] = field(default_factory=list)
    checks: list[tuple[int, float]] = field(default_factory=list)
    seconds: float = 0.0


def linear_module_names(model: nn.Module) -> list[str]:
    """Names (last dotted part) of the ``nn.Linear`` layers inside the transformer blocks.

    These are LoRA's default targets: attention and MLP projections, whatever a model family
    calls them (``q_proj``/``v_proj``/``gate_proj`` in Llama, ``c_attn``/``c_fc`` would be
    Conv1D in GPT-2 and so need passing explicitly). The output head is left out: it is tied
    to the input embeddings in many small models, and LoRA papers do not adapt it.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
             if isinstance(module, nn.Linear) and module is not head}
    if not names:
        raise ValueError("no nn.Linear layers found outside the output head; pass target_modules explicitly")
    return sorted(names)


def task_sequences(lm: ModelUnderStudy, task: Task, split: str = "train") -> list[TrainingSequence]:
    """Every example of ``split`` under every instruction phrasing (prompts in ``lm.fmt``, tokens of
    ``lm.tokenizer``), answer-only labels."""
    return [instructed_sequence(lm.tokenizer, task, ex, p, fmt=lm.fmt)
            for ex in task.split(split) for p in range(len(task.instructions))]


def lora_model(model: nn.Module, rank: int = 8, alpha: float | None = None,
               target_modules: Sequence[str] | None = None, seed: int = 0) -> nn.Module:
    """A peft LoRA model around ``model`` (which peft modifies: pass a copy to keep the original).

    ``alpha`` defaults to ``2 * rank``; dropout is 0, as in full fine-tuning here, so the two
    methods differ only in what they train. Only the adapter weights require gradients.
    """
    check_positive_int("rank", rank)
    if alpha is not None:
        check_number("alpha", alpha, above=0.0)
    if target_modules is not None:
        check_strs("target_modules", target_modules, unique=True)
    check_seed("seed", seed)
    from peft import get_peft_model

    torch.manual_seed(seed)
    with peft_quietly():
        return get_peft_model(model, _lora_config(rank, alpha, target_modules or linear_module_names(model)))


def _lora_config(rank: int, alpha: float | None, target_modules: Sequence[str]):
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else 2 * rank, lora_dropout=0.0,
                      target_modules=list(target_modules), task_type="CAUSAL_LM")


def finetune(lm: ModelUnderStudy, task: Task, settings: FinetuneSettings, method: str, seed: int,
             objective: LossFn | None = None, *, stop_examples: int | None = None) -> FinetuneResult:
    """Fine-tune a copy of ``lm.model`` on ``task``'s train split (instructed prompts in ``lm.fmt``,
    answer-only loss) as ``settings`` says for ``method``.

    ``method="full"`` trains every weight, at ``settings.lr_full``; ``method="lora"`` freezes the
    copy and trains LoRA adapters (:func:`lora_model`: rank ``settings.lora_rank``, alpha
    ``settings.lora_alpha``) on ``settings.lora_targets`` (``None``: every linear projection in
    the blocks, :func:`linear_module_names`), at ``settings.lr_lora``. AdamW without weight decay,
    ``settings.warmup_steps`` of linear warm-up, then ``settings.schedule``: ``"linear"`` decay to
    zero at ``settings.max_steps`` (the Hugging Face Trainer's default) or ``"constant"``.
    Gradients are clipped at norm 1. Batches of ``settings.batch_size`` are shuffled passes over
    all (example, phrasing) pairs, drawn with ``random.Random(seed)``.

    Early stopping: with ``settings.stop_at`` set, the task is scored (exact match under the
    instruction, :func:`ivedu.evaluation.exact_match_score`) on its valid split every
    ``settings.eval_every`` steps, and training stops at the first check that reaches
    ``stop_at`` -- "train until the new task is learnt", the least fine-tuning that does the
    job. ``settings.max_steps`` is then the most steps allowed. ``stop_examples``: the check
    scores only the first that many valid examples (``None``: all of them) -- on a real model
    each check is a generation pass, and a check every ten steps over a whole valid split can
    cost more than the training it stops.

    ``objective(model, batch, step)`` replaces the plain cross-entropy (see :data:`LossFn`):
    same batches, optimiser and stopping, another loss.
    """
    _check_run(settings, seed, stop_examples)
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    if settings.schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {settings.schedule!r}; choose one of {SCHEDULES}")
    sequences = task_sequences(lm, task, "train")
    if not sequences:
        raise ValueError(f"task {task.name!r} has no examples in split 'train'")
    if stop_examples is not None and stop_examples < 1:
        raise ValueError(f"stop_examples must be at least 1 (or None for the whole valid split), got {stop_examples}")
    checked = task if stop_examples is None else first_examples(task, "valid", stop_examples)
    steps, lr, batch_size = settings.max_steps, settings.lr(method), settings.batch_size
    tuned = copy.deepcopy(lm.model)
    if method == "lora":
        tuned = lora_model(tuned, settings.lora_rank, settings.lora_alpha, settings.lora_targets, seed)
    else:
        torch.manual_seed(seed)
    params = [p for p in tuned.parameters() if p.requires_grad]
    _upcast_half_precision(params)
    optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: _lr_factor(s, steps, settings.warmup_steps, settings.schedule))
    tokenizer = lm.tokenizer
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = model_device(tuned)
    rng = random.Random(seed)
    order: list[int] = []
    result = FinetuneResult(tuned, task.name, method, 0, lr, batch_size, seed,
                            trainable_params=sum(p.numel() for p in params))
    start = time.perf_counter()
    tuned.train()
    for step in range(steps):
        if len(order) < batch_size:
            fresh = list(range(len(sequences)))
            rng.shuffle(fresh)
            order += fresh
        batch = collate([sequences[i] for i in order[:batch_size]], pad)
        del order[:batch_size]
        batch = {k: v.to(device) for k, v in batch.items()}
        loss = tuned(**batch).loss if objective is None else objective(tuned, batch, step)
        check_finite_loss(loss, step)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimiser.step()
        scheduler.step()
        result.losses.append(loss.item())
        result.steps = step + 1
        if settings.stop_at is not None and (step + 1) % settings.eval_every == 0:
            tuned.eval()
            score = exact_match_score(lm.with_model(tuned), checked, "valid")
            tuned.train()
            result.checks.append((step + 1, score))
            if score >= settings.stop_at:
                break
    tuned.eval()
    result.seconds = time.perf_counter() - start
    return result


def _check_run(settings: FinetuneSettings, seed: int, stop_examples: int | None) -> None:
    if not isinstance(settings, FinetuneSettings):
        raise TypeError(f"settings must be a FinetuneSettings, got {type(settings).__name__}: pass settings.finetune")
    check_seed("seed", seed)
    check_optional_positive_int("stop_examples", stop_examples)


def first_examples(task: Task, split: str, n: int) -> Task:
    """``task`` with its ``split`` cut to the first ``n`` examples (a fixed subset: the splits
    are shuffled when a task is made); for ``"heldout"`` the first ``n`` of valid + test."""
    check_positive_int("n", n)
    if split == "heldout":
        kept = task.split("heldout")[:n]
        return replace(task, valid=kept, test=())
    return replace(task, **{split: task.split(split)[:n]})


def _upcast_half_precision(params: Sequence[nn.Parameter]) -> None:
    """Trainable float16 and bfloat16 weights become float32 master weights, in place.

    AdamW's update divides by ``sqrt(v) + 1e-8``, and 1e-8 is zero in float16: updates of a
    float16 weight overflow to ``nan`` within a few steps (a T4 loads models in float16).
    bfloat16 keeps 8 bits of mantissa, so an update of lr 1e-5 to a weight of 0.05 (a
    relative change of 2e-4) rounds away to nothing: full fine-tuning of a bfloat16 model at
    the usual rates would silently not train. In full fine-tuning every weight trains, so the
    copy becomes a float32 model (16 bytes per parameter with AdamW, as :mod:`ivedu.costs`
    counts); LoRA's adapters are float32 already (peft) and its frozen base stays as it is.
    """
    for p in params:
        if p.dtype in (torch.float16, torch.bfloat16):
            p.data = p.data.float()


def _lr_factor(step: int, steps: int, warmup_steps: int, schedule: str) -> float:
    """Linear warm-up over ``warmup_steps``, then constant or linear decay to zero at ``steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    return max(0.0, (steps - step) / max(1, steps - warmup_steps))


@dataclass
class SequenceResult:
    """Fine-tuning on tasks one after another, scored after every stage.

    ``R[t, i]``: exact match on ``tasks[i]`` (``split``) after training stages ``0 .. t``,
    ``[T, T]`` -- the matrix :mod:`ivedu.metrics` takes. ``baseline[i]``: the same score
    before any fine-tuning, ``[T]``. ``general[s]``: :class:`ivedu.evaluation.AbilityScores`
    (zero-shot) of every general task at stage ``s``, where stage 0 is *before* fine-tuning, so
    ``len(general) == T + 1``. ``stages[t]`` holds stage ``t``'s training record, with its
    ``model`` dropped (set to ``None``) to keep one model in memory; ``model`` is the final one.
    """

    tasks: list[str]
    method: str
    R: np.ndarray
    baseline: np.ndarray
    general: list[list[AbilityScores]]
    stages: list[FinetuneResult]
    model: nn.Module


@dataclass(frozen=True)
class SequenceState:
    """A sequence part-way: ``done`` stages trained, ``model`` their last stage's weights (LoRA
    merged), ``baseline`` and ``rows`` (the first ``done`` rows of ``R``) as
    :class:`SequenceResult` has them. :func:`finetune_sequence` hands one to ``keep`` after every
    stage and resumes from one given as ``resume``: on a 2-core CPU a real model's sequence
    outlasts a session."""

    done: int
    model: nn.Module
    baseline: tuple[float, ...]
    rows: tuple[tuple[float, ...], ...]


def sequence_scores(lm: ModelUnderStudy, tasks: Sequence[Task], split: str = "test") -> list[float]:
    """Exact match of each of ``tasks`` on ``split`` under its instruction: a row of ``R``."""
    return [exact_match_score(lm, t, split) for t in tasks]


def finetune_sequence(lm: ModelUnderStudy, tasks: Sequence[Task], settings: FinetuneSettings, method: str,
                      seed: int, *, split: str = "test", general: Sequence[Task] = (),
                      objective_for: Callable[[nn.Module, int], LossFn | None] | None = None,
                      on_stage: Callable[[int, nn.Module, FinetuneResult], None] | None = None,
                      baseline: Sequence[float] | None = None, stop_examples: int | None = None,
                      keep: Callable[[SequenceState], None] | None = None,
                      resume: SequenceState | None = None) -> SequenceResult:
    """Fine-tune a copy of ``lm.model`` on ``tasks`` in order, scoring after every stage.

    Each stage is :func:`finetune` with ``settings`` and ``method`` on the previous stage's
    model, with seed ``sub_seed(seed, stage)`` (and ``stop_examples``). With ``method="lora"``
    every stage trains a fresh adapter, which is merged into the weights before the next stage
    (sequential LoRA, as in TRACE's LoRA baseline with merging): the final ``model`` is a plain
    model again. After each stage the new tasks are scored (exact match under the instruction,
    on ``split``) into ``R``, and the ``general`` tasks with
    :func:`ivedu.evaluation.score_abilities` on ``split``, zero-shot only.

    ``objective_for(previous, stage)`` gives stage ``stage``'s objective (:data:`LossFn`, or
    ``None`` for plain cross-entropy); ``previous`` is the model before that stage -- frozen,
    never trained -- which regularisers use as their teacher or anchor. ``on_stage(stage,
    model, result)`` is called after each stage with the model as it now is (LoRA merged)
    and the stage's training record, before the stage is scored: chapter 3 measures its
    vectors there. ``baseline``: the new tasks' scores before training on ``split``
    (:func:`sequence_scores` of ``lm``), when the caller has them already -- chapter 4 runs
    every method from the same model; ``None``: scored here.

    ``keep(state)`` receives the :class:`SequenceState` after every scored stage; ``resume``
    starts from one (its stages are not trained again, and ``stages`` then holds only the
    stages trained in this call). A resumed run scores no ``general`` tasks: their earlier rows
    are not in the state.
    """
    check_nonempty("tasks", tasks, "task")
    _check_run(settings, seed, stop_examples)
    if baseline is not None and len(baseline) != len(tasks):
        raise ValueError(f"{len(baseline)} baseline scores for {len(tasks)} tasks")

    def score(m, new: Sequence[float] | None = None) -> tuple[list[float], list[AbilityScores]]:
        now = lm.with_model(m)
        new = list(new) if new is not None else sequence_scores(now, tasks, split)
        return new, score_abilities(now, general, split, k=0) if general else []

    R = np.zeros((len(tasks), len(tasks)))
    if resume is not None:
        if general:
            raise ValueError("a resumed sequence cannot score general tasks (the state keeps no earlier scores): "
                             "pass general=() or start afresh")
        if not 0 < resume.done <= len(tasks) or len(resume.rows) != resume.done:
            raise ValueError(f"resume must hold 1 to {len(tasks)} finished stages with a row of R each, "
                             f"got done={resume.done} and {len(resume.rows)} rows: start afresh")
        baseline, general0, current, first = list(resume.baseline), [], resume.model, resume.done
        R[:first] = np.asarray(resume.rows)
    else:
        (baseline, general0), current, first = score(lm.model, baseline), lm.model, 0
    general_scores, stages = [general0], []
    for t, task in enumerate(tasks[first:], start=first):
        objective = objective_for(current, t) if objective_for is not None else None
        result = finetune(lm.with_model(current), task, settings, method, sub_seed(seed, t), objective,
                          stop_examples=stop_examples)
        current = result.model.merge_and_unload() if method == "lora" else result.model
        result.model = None
        if on_stage is not None:
            on_stage(t, current, result)
        stages.append(result)
        R[t], scores = score(current)
        general_scores.append(scores)
        if keep is not None:
            keep(SequenceState(t + 1, current, tuple(float(x) for x in baseline),
                               tuple(tuple(float(x) for x in row) for row in R[:t + 1])))
    return SequenceResult([t.name for t in tasks], method, R, np.asarray(baseline), general_scores, stages, current)
