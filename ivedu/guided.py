"""Instruction-vector-guided training: fine-tune a new task while keeping the old computation graph.

The paper's remedy for forgetting (Jiang et al. 2024) has two parts, progressive IV
intervention and an IV-based KL loss; its text gives no formulas. The authors' code for the
sibling function-vector paper (``GangweiJiang/FvForgetting``, ``src/tuning/trainer/base.py``)
gives the losses exactly; this module follows it and adds the progressive intervention as
the IV paper describes it. For a batch of right-padded new-task sequences, with ``t_b`` the
last prompt token of row ``b`` (the position that predicts the first answer token):

- **teacher**: the model *before* this stage (frozen) with the current task's instruction
  vector ``v`` added in layer ``l`` at ``t_b``: logits ``z_T``;
- **student**: the model being trained, logits ``z_S`` (with ``lambda_s * v`` added at
  ``t_b`` while the progressive intervention lasts);

    L = CE(z_S, answers)
      + a1 * [KL1 > 0.1] * KL1,   KL1 = KD(z_S[b, t_b], z_T[b, t_b])          (a) answer start
      + a2 * [KL2 > 0.1] * KL2,   KL2 = KD(z_S[b, t],   z_T[b, t]) over t     (b) all positions
      + beta * sum_(l,h) [m_lh > 0.01] * m_lh,
            m_lh = mean over rows and head_dim of (a_lh(S) - a_lh(previous))^2 at t_b   (c) heads
    KD(s, t) = sum_v softmax(s/T) * (log_softmax(s/T) - log_softmax(t/T)), summed over positions,
               divided by the batch size (``F.kl_div(..., reduction="batchmean")``), T = 2:
               the *reverse* KL, KL(student || teacher), with no T^2 factor, as in the code.
    (d) progressive intervention: lambda_s decays linearly from 1 at the first step to 0 at
        step ``progressive_steps`` (default: the stage's number of steps) and stays 0 after.

Each term has its own weight in :class:`GuidedSettings`; a weight of 0 (or
``progressive=False``) switches it off. One deliberate difference from the code: the
all-position KL skips padding positions (the code's left-padded batches include them).

The vectors come from :func:`new_task_vectors`: each new task's vector, from the model before
any training, with a report of whether it carries the task at all. The training of every
method, guided or not, and its scoring are in :mod:`ivedu.continual`.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import asdict, dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ivedu.architectures import check_layer, model_layout
from ivedu.arguments import check_int, check_nonempty, check_number, check_seed, check_tensor
from ivedu.corpus import IGNORE_INDEX
from ivedu.extraction import build_vectors, corrupted_prompts, scan_tasks
from ivedu.hooks import SITES, record_head_outputs
from ivedu.intervention import InstructionVector, Steering, steered_first_token_accuracy
from ivedu.mediation import Head
from ivedu.settings import TERMS, GuidedSettings, Settings
from ivedu.study import ModelUnderStudy
from ivedu.world import Task


def answer_start_positions(labels: torch.Tensor) -> torch.Tensor:
    """Index of each row's last prompt token (it predicts the first answer token): ``[batch]``.

    ``labels``: ``[batch, seq]`` from :func:`ivedu.corpus.collate`, ``-100`` except on the
    answer; the answer starts at the first learnt label, so the prompt ends one before it.
    """
    learnt = labels != IGNORE_INDEX
    if not learnt.any(-1).all():
        raise ValueError("every row needs at least one learnt (answer) label to find where its answer starts")
    first = learnt.long().argmax(-1)
    if (first < 1).any():
        raise ValueError("a row's answer starts at position 0: there is no prompt token before it")
    return first - 1


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 2.0,
            mask: torch.Tensor | None = None) -> torch.Tensor:
    """Reverse KL(student || teacher) of temperature-softened distributions, per row.

    ``*_logits``: ``[batch, vocab]`` or ``[batch, seq, vocab]``; ``mask`` (``[batch, seq]``,
    1 = keep) drops positions, e.g. padding. Summed over positions and vocabulary, divided by
    the batch size: ``F.kl_div(log_softmax(teacher/T), softmax(student/T), "batchmean")``,
    the authors' ``KD_loss``. Gradients flow into the student only.
    """
    check_tensor("student_logits", student_logits, (2, 3), floating=True, finite=False)
    check_tensor("teacher_logits", teacher_logits, (2, 3), floating=True, finite=False)
    check_number("temperature", temperature, above=0.0)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {list(student_logits.shape)} and teacher logits "
                         f"{list(teacher_logits.shape)} must have the same shape")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    log_p = F.log_softmax(student_logits.float() / temperature, -1)
    log_q = F.log_softmax(teacher_logits.detach().float() / temperature, -1)
    per_position = (log_p.exp() * (log_p - log_q)).sum(-1)  # [batch] or [batch, seq]
    if mask is not None:
        per_position = per_position * mask.to(per_position.dtype)
    return per_position.sum() / student_logits.shape[0]


def gated(value: torch.Tensor, gate: float) -> torch.Tensor:
    """``value`` if it exceeds ``gate``, else 0 (no loss and no gradient): the code's hard gates."""
    return value if float(value.detach()) > gate else value * 0.0


def progressive_weight(step: int, steps: int) -> float:
    """Weight of the vector added to the student at ``step``: 1 at step 0, linearly to 0 at
    ``steps - 1``, and 0 after (a stage may run longer than its schedule)."""
    check_int("step", step)
    check_int("steps", steps)
    if steps < 1 or step < 0:
        raise ValueError(f"need steps >= 1 and step >= 0, got step {step} of {steps}")
    return max(0.0, 1.0 - step / max(1, steps - 1))


def head_mse(student: dict[int, torch.Tensor], teacher: dict[int, torch.Tensor], heads: Sequence[Head],
             positions: torch.Tensor, gate: float = 0.01) -> torch.Tensor:
    """Sum over ``heads`` of the gated mean squared difference of head outputs at ``positions``.

    ``student``/``teacher``: ``layer -> [batch, seq, n_heads, head_dim]``
    (:func:`ivedu.hooks.record_head_outputs`); ``positions``: ``[batch]`` one position per row.
    """
    if not heads:
        raise ValueError("no heads given for the head-output term: pass the vector's heads")
    rows = torch.arange(positions.shape[0])
    total = None
    for layer, head in heads:
        s = student[layer][rows, positions, head]
        t = teacher[layer][rows, positions, head].detach()
        term = gated(F.mse_loss(s.float(), t.float()), gate)
        total = term if total is None else total + term
    return total


class GuidedObjective:
    """The guided loss of one training stage, a :data:`ivedu.finetune.LossFn`.

    ``teacher``: the previous-stage model (frozen; with LoRA, the model the adapter was put
    on). ``vector``: the current task's instruction vector ``[hidden]``, or ``None`` for a
    teacher with no vector (the KL-to-previous-model control). ``heads``: the heads of term
    (c). ``steps``: the stage's number of steps (the progressive schedule's length).
    ``history`` records each step's terms (floats) for plots.
    """

    def __init__(self, teacher: nn.Module, vector: torch.Tensor | None, heads: Sequence[Head],
                 settings: GuidedSettings, steps: int):
        if settings.head_mse and not heads:
            raise ValueError("head_mse > 0 needs the heads whose outputs are kept: pass heads")
        if settings.progressive and vector is None:
            raise ValueError("the progressive intervention needs a vector: pass one or set progressive=False")
        check_settings(teacher, settings)
        self.teacher = teacher.eval()
        self.vector = vector
        self.heads = tuple(heads)
        self.settings = settings
        self.steps = steps
        self.history: list[dict[str, float]] = []
        # Heads at or before the vector's layer are unaffected by it: record them on the steered pass.
        self._layers = sorted({l for l, _ in self.heads}) if settings.head_mse else []
        self._one_teacher_pass = all(l <= settings.layer for l in self._layers)

    def _steer(self, model: nn.Module, positions: torch.Tensor, scale: float):
        if self.vector is None or scale == 0:
            return ExitStack()
        s = self.settings
        return Steering(s.layer, scale * s.scale, s.site, positions).add(model, self.vector)

    @torch.no_grad()
    def teacher_outputs(self, batch: dict, positions: torch.Tensor) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Teacher logits ``[batch, seq, vocab]`` with the vector, and its clean head outputs."""
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        with ExitStack() as stack:
            heads = stack.enter_context(record_head_outputs(self.teacher, self._layers)) if self._layers else {}
            stack.enter_context(self._steer(self.teacher, positions, 1.0))
            logits = self.teacher(**inputs).logits
        if self._layers and not self._one_teacher_pass:
            with record_head_outputs(self.teacher, self._layers) as heads:
                self.teacher(**inputs)
        return logits, dict(heads)

    def __call__(self, model: nn.Module, batch: dict, step: int) -> torch.Tensor:
        s = self.settings
        positions = answer_start_positions(batch["labels"])
        teacher_logits, teacher_heads = self.teacher_outputs(batch, positions)
        weight = progressive_weight(step, s.progressive_steps or self.steps) if s.progressive else 0.0
        with ExitStack() as stack:
            student_heads = (stack.enter_context(record_head_outputs(model, self._layers, detach=False))
                             if self._layers else {})
            stack.enter_context(self._steer(model, positions, weight))
            out = model(**batch)
        rows = torch.arange(positions.shape[0])
        parts = {"ce": out.loss}
        if s.kl_start:
            kl1 = kd_loss(out.logits[rows, positions], teacher_logits[rows, positions], s.temperature)
            parts["kl_start"] = s.kl_start * gated(kl1, s.kl_gate)
        if s.kl_all:
            kl2 = kd_loss(out.logits, teacher_logits, s.temperature, batch["attention_mask"])
            parts["kl_all"] = s.kl_all * gated(kl2, s.kl_gate)
        if s.head_mse:
            parts["head_mse"] = s.head_mse * head_mse(student_heads, teacher_heads, self.heads, positions,
                                                      s.mse_gate)
        loss = sum(parts.values())
        self.history.append({**{k: float(v.detach()) for k, v in parts.items()}, "vector_weight": weight})
        return loss


@dataclass(frozen=True)
class VectorReport:
    """What one new task's vector is, in the model it was extracted from.

    ``heads``: the (layer, head) pairs summed, best first; ``norm``: the vector's norm;
    ``clean_prob`` / ``corrupted_prob``: mean P(correct first token) with the instruction and
    without it (the scan's train prompts); ``max_effect``: the largest head's average indirect
    effect; ``bare_accuracy`` / ``with_vector_accuracy``: first-token accuracy on the valid
    split's instruction-less prompts, bare and with the vector added where the guided loss adds
    it (``GuidedSettings.layer``, ``site``, ``scale``). Probabilities and accuracies in [0, 1].
    """

    task: str
    heads: tuple[Head, ...]
    norm: float
    clean_prob: float
    corrupted_prob: float
    max_effect: float
    bare_accuracy: float
    with_vector_accuracy: float

    def as_json(self) -> dict:
        """Every field but the task's name, heads as ``[layer, head]`` lists."""
        return {**{k: v for k, v in asdict(self).items() if k != "task"}, "heads": [list(h) for h in self.heads]}


def new_task_vectors(lm: ModelUnderStudy, tasks: Sequence[Task], settings: Settings, seed: int = 0,
                     progress: bool = False) -> tuple[dict[str, InstructionVector], dict[str, VectorReport]]:
    """Each task's instruction vector, extracted from ``lm`` before it learns any of them, and a
    :class:`VectorReport` of what the vector does: ``(vectors, reports)``, keyed by task name.

    As in chapter 2 (:func:`ivedu.extraction.scan_tasks`, :func:`ivedu.extraction.build_vectors`):
    ``settings.guided.vector_prompts`` train prompts per task, clean with the instruction and
    corrupted without it (``settings.extraction``'s styles), drawn with ``seed``; the top
    ``settings.guided.vector_heads`` heads by indirect effect, summed. As in the authors' code,
    every vector comes from the original model. A model that cannot yet do a new task gives
    small effects and a vector that says what it makes of the new instruction rather than how to
    do the task -- the report measures which, before any training relies on it.
    """
    check_nonempty("tasks", tasks, "task")
    check_seed("seed", seed)
    g = settings.guided
    scans = scan_tasks(lm, tasks, g.vector_prompts, seed, settings.extraction, progress=progress)
    vectors = build_vectors(lm.model, scans, g.vector_heads)
    reports = {}
    for task in tasks:
        iv, scan = vectors[task.name], scans[task.name]
        bare = corrupted_prompts(task, "valid", "removed", n=None, seed=seed, fmt=lm.fmt)

        def accuracy(vector: torch.Tensor | None) -> float:
            return steered_first_token_accuracy(lm, bare.prompts, bare.answers, vector,
                                                Steering(g.loss.layer, g.loss.scale, g.loss.site))

        reports[task.name] = VectorReport(task.name, iv.heads, iv.norm, scan.clean_prob, scan.corrupted_prob,
                                          float(scan.effects.max()), accuracy(None), accuracy(iv.vector))
    return vectors, reports


def check_settings(model: nn.Module, settings: GuidedSettings) -> None:
    """Raise ``IndexError``/``ValueError`` now, before any training, if the settings do not fit ``model``."""
    if not isinstance(settings, GuidedSettings):
        raise TypeError(f"settings must be a GuidedSettings, got {type(settings).__name__}: pass settings.guided.loss")
    check_layer(model_layout(model), settings.layer)
    if settings.site not in SITES:
        raise ValueError(f"site must be one of {SITES}, got {settings.site!r}")
    for name in ("kl_start", "kl_all", "head_mse"):
        if getattr(settings, name) < 0:
            raise ValueError(f"{name} is a loss weight and must be >= 0, got {getattr(settings, name)}")
    if settings.temperature <= 0:
        raise ValueError(f"temperature must be positive, got {settings.temperature}")
