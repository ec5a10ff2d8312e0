"""Timing the method's steps on the machine at hand: chapter 5's measured rows.

:mod:`ivedu.costs` estimates each step's time and memory by arithmetic, for GPUs this
machine does not have; this module runs the same steps -- the very functions the chapters
call -- on the model at hand and times them (on a GPU, with their peak memory too).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Sequence

import torch

from ivedu.arguments import check_callable, check_nonempty, check_optional_positive_int, check_seed, check_str
from ivedu.costs import StepCost
from ivedu.extraction import best_setting, build_vectors, scan_tasks, score_vectors, sweep
from ivedu.finetune import METHODS, finetune
from ivedu.generation import model_device
from ivedu.intervention import Steering
from ivedu.settings import Settings
from ivedu.study import ModelUnderStudy
from ivedu.world import Task


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(step: str, fn, device: torch.device | str):
    """Run ``fn()`` and time it; on a GPU also its peak allocated memory. Returns ``(result, StepCost)``.

    The :class:`ivedu.costs.StepCost` has ``basis="measured on <device>"``; FLOPs and bytes
    are left 0 (not measured); on the CPU ``memory_bytes`` is 0 (peak GPU memory does not apply).
    """
    check_str("step", step)
    check_callable("fn", fn)
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _synchronise(device)
    start = time.perf_counter()
    result = fn()
    _synchronise(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    return result, StepCost(step, 0.0, 0.0, int(peak), seconds, True, basis=f"measured on {where}")


def measure_pipeline(lm: ModelUnderStudy, tasks: Sequence[Task], new_task: Task, settings: Settings, *,
                     train_steps: int | None = None, seed: int = 0) -> list[StepCost]:
    """Time (and on a GPU, peak memory of) chapter 2's pipeline and the fine-tuning steps.

    On ``tasks``: the scan (:func:`ivedu.extraction.scan_tasks`), the vectors at the first head
    count, the intervention sweep on valid with the choice of its best cell, then the test
    scores there; then ``train_steps`` (default ``settings.finetune.max_steps``) of LoRA and of
    full fine-tuning on ``new_task``, with no early stopping, so the time is that of a known
    number of steps. ``lm.model`` can be a real checkpoint or a randomly initialised model of a
    real model's size: the cost does not depend on the weights' values.
    """
    check_nonempty("tasks", tasks, "task")
    check_optional_positive_int("train_steps", train_steps)
    check_seed("seed", seed)
    model, x = lm.model, settings.extraction
    device = model_device(model)
    rows = []
    scans, cost = measure("scan (causal mediation)", lambda: scan_tasks(lm, tasks, x.n_prompts, seed, x), device)
    rows.append(cost)
    _, cost = measure("vector (sum of top heads)", lambda: build_vectors(model, scans, x.head_counts[0]), device)
    rows.append(cost)

    def sweep_and_test():
        grid = sweep(lm, scans, tasks, seed, x)
        k, layer, scale = best_setting(grid, x, lm.layout.n_layers)
        return score_vectors(lm, tasks, build_vectors(model, scans, k), Steering(layer, scale, x.site), seed, x)

    _, cost = measure("intervention sweep + test", sweep_and_test, device)
    rows.append(cost)
    steps = train_steps or settings.finetune.max_steps
    training = replace(settings.finetune, max_steps=steps, stop_at=None,
                       warmup_steps=min(settings.finetune.warmup_steps, steps))
    for method in reversed(METHODS):  # LoRA first: the cheaper of the two
        result, cost = measure(f"fine-tuning ({method})", lambda: finetune(lm, new_task, training, method, seed),
                               device)
        del result
        rows.append(cost)
    return rows
