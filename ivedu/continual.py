"""Continual-learning methods on a sequence of new tasks, all in one harness.

Every method trains the same way -- :func:`ivedu.finetune.finetune_sequence`: the same
batches, optimiser, steps and LoRA set-up -- and differs only in its loss
(:data:`ivedu.finetune.LossFn`), built per stage from the model before that stage:

- ``plain``: cross-entropy on the new task (sequential fine-tuning; with LoRA, TRACE's and
  the FV paper's IncLoRA: a fresh adapter per task, merged after it);
- ``kl``: cross-entropy plus KL to the previous-stage model on the new task's sequences,
  with no vector (LwF, Li & Hoiem 2017): the control that isolates what the vector adds;
- ``replay``: cross-entropy plus cross-entropy on a small buffer of the *previous new tasks'*
  training examples (experience replay). The general tasks' data are never used by any
  method: in the paper's setting the general abilities' training data is not available;
  only the tasks of the sequence itself, once trained, can be kept;
- ``ewc``: cross-entropy plus the diagonal-Fisher penalty of EWC (Kirkpatrick et al. 2017),
  online form: the Fisher of each finished task, accumulated, around the previous stage's
  weights;
- ``guided``: the IV-guided loss (:mod:`ivedu.guided`) with the current task's instruction
  vector; ``random_vector``: the same loss with a random vector of equal norm.

:func:`run_method` runs one method over the sequence and scores it: ``R`` (new tasks after
every stage) and the general tasks zero-shot (GP) and in context (IP) before and after.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ivedu.corpus import TrainingSequence, collate
from ivedu.evaluation import in_context_score, instruction_following_score
from ivedu.finetune import LossFn, finetune_sequence, task_sequences
from ivedu.generation import model_device
from ivedu.guided import GuidedObjective, GuidedSettings
from ivedu.intervention import InstructionVector, random_vector_like
from ivedu.metrics import continual_metrics
from ivedu.prompts import PromptFormat
from ivedu.world import Task

KINDS = ("plain", "kl", "replay", "ewc", "guided", "random_vector")


@dataclass(frozen=True)
class Method:
    """One continual-learning method: a loss ``kind`` (:data:`KINDS`) on a ``base`` ("lora"/"full").

    ``guided``: the guided-loss settings (``kind`` "kl", "guided", "random_vector"; for "kl"
    only its KL weights and temperature are used). ``replay_per_task``: examples kept per
    finished task; ``replay_batch``/``replay_weight``: replayed sequences per step and the
    weight of their loss. ``ewc_lambda``: the EWC penalty's weight; ``fisher_examples``:
    sequences its Fisher is estimated on.
    """

    name: str
    kind: str
    base: str = "lora"
    guided: GuidedSettings = field(default_factory=GuidedSettings)
    replay_per_task: int = 8
    replay_batch: int = 8
    replay_weight: float = 1.0
    ewc_lambda: float = 1000.0
    fisher_examples: int = 32

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown kind {self.kind!r}; choose one of {KINDS}")
        if self.base not in ("lora", "full"):
            raise ValueError(f"base must be 'lora' or 'full', got {self.base!r}")


# --- replay ----------------------------------------------------------------------------------

class ReplayObjective:
    """Cross-entropy on the new batch plus ``weight`` x cross-entropy on a replayed batch."""

    def __init__(self, buffer: Sequence[TrainingSequence], pad_id: int, batch_size: int, weight: float,
                 seed: int):
        if not buffer:
            raise ValueError("the replay buffer is empty: replay starts at the second task")
        self.buffer = list(buffer)
        self.pad_id = pad_id
        self.batch_size = batch_size
        self.weight = weight
        self.rng = random.Random(seed)

    def __call__(self, model: nn.Module, batch: dict, step: int) -> torch.Tensor:
        replayed = collate(self.rng.sample(self.buffer, min(self.batch_size, len(self.buffer))), self.pad_id)
        replayed = {k: v.to(batch["input_ids"].device) for k, v in replayed.items()}
        return model(**batch).loss + self.weight * model(**replayed).loss


def replay_buffer(tokenizer, tasks: Sequence[Task], per_task: int, seed: int,
                  *, fmt: PromptFormat) -> list[TrainingSequence]:
    """``per_task`` training sequences of each task ((example, instruction phrasing) pairs of
    its train split, as :func:`ivedu.finetune.task_sequences` builds them, prompts in ``fmt``),
    drawn with ``seed``."""
    buffer: list[TrainingSequence] = []
    for task in tasks:
        sequences = task_sequences(tokenizer, task, fmt=fmt)
        buffer += random.Random(f"{seed}:{task.name}").sample(sequences, min(per_task, len(sequences)))
    return buffer


# --- EWC ---------------------------------------------------------------------------------------

def fisher_diagonal(model: nn.Module, tokenizer, sequences: Sequence[TrainingSequence]) -> dict[str, torch.Tensor]:
    """Empirical diagonal Fisher: mean over ``sequences`` of each parameter's squared gradient.

    One sequence at a time (the Fisher is a mean of per-example squared gradients, not the
    square of a batch's mean gradient), of the answer-token cross-entropy. Keys are
    ``model.named_parameters()`` names, values the parameters' shapes. ``model`` is a plain
    (not peft-wrapped) model; its ``requires_grad`` flags are restored afterwards.
    """
    if not sequences:
        raise ValueError("no sequences to estimate the Fisher on")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    params = dict(model.named_parameters())
    flags = {n: p.requires_grad for n, p in params.items()}
    fisher = {n: torch.zeros_like(p) for n, p in params.items()}
    was_training = model.training
    model.eval()
    device = model_device(model)
    try:
        for p in params.values():
            p.requires_grad_(True)
        for seq in sequences:
            batch = {k: v.to(device) for k, v in collate([seq], pad).items()}
            model.zero_grad(set_to_none=True)
            model(**batch).loss.backward()
            for n, p in params.items():
                if p.grad is not None:
                    fisher[n] += p.grad.detach() ** 2
    finally:
        model.zero_grad(set_to_none=True)
        for n, p in params.items():
            p.requires_grad_(flags[n])
        model.train(was_training)
    return {n: f / len(sequences) for n, f in fisher.items()}


def weight_changes(model: nn.Module, anchor: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """How far each anchored weight has moved: ``name -> (current - anchor)``, differentiable.

    For a full model that is each parameter minus its anchor. For a peft LoRA model the base
    weights are frozen at the anchor, so a weight's change is its adapter's delta
    ``B @ A * scaling`` (``get_delta_weight``), keyed by the plain model's name.
    """
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        return {n: p - anchor[n] for n, p in model.named_parameters() if p.requires_grad and n in anchor}
    changes = {}
    prefix = "base_model.model."
    for name, module in model.named_modules():
        if hasattr(module, "get_delta_weight") and hasattr(module, "base_layer") and module.active_adapters:
            key = name[len(prefix):] if name.startswith(prefix) else name
            changes[key + ".weight"] = sum(module.get_delta_weight(a) for a in module.active_adapters)
    return changes


class EWCObjective:
    """Cross-entropy plus ``lam / 2 * sum_i F_i (theta_i - theta*_i)^2`` (Kirkpatrick et al. 2017)."""

    def __init__(self, anchor: dict[str, torch.Tensor], fisher: dict[str, torch.Tensor], lam: float):
        self.anchor = anchor
        self.fisher = fisher
        self.lam = lam

    def penalty(self, model: nn.Module) -> torch.Tensor:
        """``sum_i F_i (theta_i - theta*_i)^2`` over the weights that can move."""
        changes = weight_changes(model, self.anchor)
        if not changes:
            raise ValueError("no trainable weight matches the anchor: is this the model the anchor was taken from?")
        return sum((self.fisher[n] * d.pow(2)).sum() for n, d in changes.items() if n in self.fisher)

    def __call__(self, model: nn.Module, batch: dict, step: int) -> torch.Tensor:
        return model(**batch).loss + self.lam / 2 * self.penalty(model)


# --- the harness -------------------------------------------------------------------------------

@dataclass
class MethodRun:
    """One method on one sequence and seed, scored.

    ``R[t, i]``: exact match on task ``i`` after stage ``t`` (test split); ``baseline[i]``:
    before training. ``gp``/``ip``: mean exact match over the general tasks, zero-shot under
    the instruction and with ``k`` demonstrations, after the last stage; ``general_if`` /
    ``general_icl``: per general task. ``history[t]``: stage ``t``'s per-step loss terms
    (guided kinds) or total losses.
    """

    method: str
    seed: int
    tasks: list[str]
    R: np.ndarray
    baseline: np.ndarray
    gp: float
    ip: float
    general_if: dict[str, float]
    general_icl: dict[str, float]
    metrics: dict[str, float]
    steps: list[int]
    history: list[list]
    seconds: float

    def as_dict(self) -> dict:
        out = {k: getattr(self, k) for k in ("method", "seed", "tasks", "gp", "ip", "general_if", "general_icl",
                                             "metrics", "steps", "seconds")}
        return {**out, "R": self.R.tolist(), "baseline": self.baseline.tolist()}


def general_scores(model: nn.Module, tokenizer, tasks: Sequence[Task], split: str = "test",
                   k: int = 4, *, fmt: PromptFormat) -> tuple[dict[str, float], dict[str, float]]:
    """Exact match of each general task zero-shot (GP's parts) and with ``k`` demonstrations (IP's)."""
    zero = {t.name: instruction_following_score(model, tokenizer, t, split, fmt=fmt).exact_match for t in tasks}
    icl = {t.name: in_context_score(model, tokenizer, t, split, k, fmt=fmt).exact_match for t in tasks} if k else {}
    return zero, icl


def _objective_factory(method: Method, tokenizer, tasks: Sequence[Task], steps: Sequence[int], seed: int,
                       vectors: dict[str, InstructionVector] | None, records: list,
                       *, fmt: PromptFormat):
    """``loss_fn_for(previous, stage)`` for :func:`ivedu.finetune.finetune_sequence`."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    fisher: dict[str, torch.Tensor] = {}

    def loss_fn_for(previous: nn.Module, stage: int) -> LossFn | None:
        task = tasks[stage]
        if method.kind == "plain":
            return None
        if method.kind in ("guided", "random_vector", "kl"):
            if method.kind == "kl":
                settings = GuidedSettings(kl_start=method.guided.kl_start, kl_all=method.guided.kl_all,
                                          head_mse=0.0, progressive=False, temperature=method.guided.temperature,
                                          kl_gate=method.guided.kl_gate)
                objective = GuidedObjective(previous, None, (), settings, steps[stage])
            else:
                if vectors is None or task.name not in vectors:
                    raise ValueError(f"method {method.name!r} needs the instruction vector of {task.name!r}")
                iv = vectors[task.name]
                vector = iv.vector if method.kind == "guided" else random_vector_like(iv.vector, 1000 * seed + stage)
                objective = GuidedObjective(previous, vector, iv.heads, method.guided, steps[stage])
            records.append(objective.history)
            return objective
        if stage == 0:
            return None  # nothing to replay or to protect before the first task is learnt
        if method.kind == "replay":
            return ReplayObjective(replay_buffer(tokenizer, tasks[:stage], method.replay_per_task, seed, fmt=fmt), pad,
                                   method.replay_batch, method.replay_weight, 1000 * seed + stage)
        # ewc: add the Fisher of the task just finished, at the weights it ended with
        previous_task = tasks[stage - 1]
        sample = random.Random(f"{seed}:fisher:{previous_task.name}").sample(
            task_sequences(tokenizer, previous_task, fmt=fmt), method.fisher_examples)
        for name, f in fisher_diagonal(previous, tokenizer, sample).items():
            fisher[name] = fisher.get(name, 0) + f
        anchor = {n: p.detach().clone() for n, p in previous.named_parameters()}
        return EWCObjective(anchor, fisher, method.ewc_lambda)

    return loss_fn_for


def run_method(model: nn.Module, tokenizer, tasks: Sequence[Task], general: Sequence[Task], method: Method,
               seed: int, *, steps: int | Sequence[int] = 100, lr: float | None = None, batch_size: int = 16,
               vectors: dict[str, InstructionVector] | None = None, split: str = "test", k: int = 4,
               fmt: PromptFormat, **finetune_kwargs) -> MethodRun:
    """Train ``method`` on ``tasks`` in order from ``model`` (untouched) and score it.

    ``steps``: per task (one number or one per task); ``lr`` defaults to chapter 1's rate
    for the base (1e-3 LoRA, 3e-4 full). ``vectors``: task name -> instruction vector, needed
    by the guided kinds (:func:`ivedu.guided.new_task_vector`). ``fmt``: the prompt format of
    training and scoring alike (a chat model's: :meth:`ivedu.profiles.Settings.prompt_format`). Remaining keyword arguments go to :func:`ivedu.finetune.finetune` (schedule, warm-up, LoRA
    rank, ``stop_at`` ...).
    """
    steps_per_task = [steps] * len(tasks) if isinstance(steps, int) else list(steps)
    lr = lr if lr is not None else (1e-3 if method.base == "lora" else 3e-4)
    start = time.perf_counter()
    records: list = []
    loss_fn_for = _objective_factory(method, tokenizer, tasks, steps_per_task, seed, vectors, records, fmt=fmt)
    result = finetune_sequence(model, tokenizer, tasks, method=method.base, steps=steps_per_task, lr=lr,
                               batch_size=batch_size, seed=seed, split=split, loss_fn_for=loss_fn_for,
                               fmt=fmt, **finetune_kwargs)
    gen_if, gen_icl = general_scores(result.model, tokenizer, general, split, k, fmt=fmt)
    history = records if records else [stage.losses for stage in result.stages]
    return MethodRun(method.name, seed, result.tasks, result.R, result.baseline,
                     gp=float(np.mean(list(gen_if.values()))),
                     ip=float(np.mean(list(gen_icl.values()))) if gen_icl else float("nan"),
                     general_if=gen_if, general_icl=gen_icl,
                     metrics=continual_metrics(result.R, result.baseline),
                     steps=[s.steps for s in result.stages], history=history,
                     seconds=time.perf_counter() - start)
