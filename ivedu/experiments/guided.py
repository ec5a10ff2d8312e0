"""Chapter 4's reproduction: ``python -m ivedu.experiments guided --profile tiny --seeds 3 --json``.

For each seed, every method of the profile's ``guided.methods`` (:func:`ivedu.continual.methods`;
tiny: all seven) is trained on the profile's sequence of new tasks under its fine-tuning settings
and stop rule, and scored (:func:`ivedu.continual.run_method`): the general tasks zero-shot (GP)
and in context (IP) after the last stage, the sequence's own tasks after every stage (AP, FP,
forgetting, BWT). Each new task's vector comes from the original model. On the first
``settings.guided.ablation_seeds`` seeds the ablation drops each term of the guided loss in turn.
No method sees the general tasks' data; replay keeps 8 examples of each finished task.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict
from typing import Sequence

from ivedu.continual import (GeneralScores, MethodRun, MethodSummary, ablation_methods, criterion, general_scores,
                             methods, run_method, summarise)
from ivedu.experiments.log import Log
from ivedu.guided import VectorReport, new_task_vectors
from ivedu.settings import Settings
from ivedu.study import general_tasks, load_study, load_tasks


def reads(settings: Settings) -> tuple[str, ...]:
    """The sequence, its fine-tuning, the scan of the new tasks' vectors, chapter 4's methods and loss."""
    return ("data.sequence", "finetune", "extraction", "guided")


def run(settings: Settings, seeds: list[int], progress: bool = False) -> dict:
    """Every method on ``settings.data.sequence``, and the ablation: see :func:`compare`."""
    return compare(settings, seeds, settings.data.sequence, settings.guided.methods, ablation=True,
                   progress=progress)


def compare(settings: Settings, seeds: list[int], sequence: Sequence[str], names: Sequence[str],
            ablation: bool, progress: bool = False) -> dict:
    """The methods ``names`` on ``sequence``, one run per seed, as a JSON-ready dict.

    ``summary[method]``: GP, IP, AP, FP, forgetting, BWT and steps (means over seeds) with each
    one's ``*_std`` and ``n_seeds``; ``before``: GP and IP before training (``general_before``:
    per task); ``vectors[seed][task]``: what each new task's vector does; ``ablation``: the same
    for each dropped term on the ablation seeds; ``criterion``: the claim's bars; ``per_seed``."""
    log = Log(progress)
    lm = load_study(settings)
    world = load_tasks(settings, lm)
    tasks, general = [world.task(n) for n in sequence], general_tasks(settings, world)
    data, guided = settings.data, settings.guided
    before = general_scores(lm, general, data.split, data.k_shots)
    registry = methods(guided.loss)
    per_seed, reports, scores, ablation_scores = [], {}, {n: [] for n in names}, {}
    for i, seed in enumerate(seeds):
        vectors, reports[seed] = new_task_vectors(lm, tasks, settings, seed)
        todo = {n: registry[n] for n in names}
        if ablation and i < guided.ablation_seeds:
            todo.update(ablation_methods(guided.loss))
        for name, method in todo.items():
            result = run_method(lm, tasks, general, method, seed, settings.finetune, max_steps=guided.max_steps,
                                vectors=vectors, split=data.split, k=data.k_shots)
            per_seed.append(run_json(result))
            (scores if name in scores else ablation_scores).setdefault(name, []).append(result.scores)
            log(f"seed {seed} {name}: GP {result.gp:.2f} IP {result.ip:.2f} AP {result.metrics['AP']:.2f} "
                f"({result.seconds:.0f} s)")
    summary = {name: summarise(s) for name, s in scores.items()}
    ablation_summary = {name: summarise(s) for name, s in ablation_scores.items()}
    if ablation_summary and "iv_guided" in scores:
        ablation_summary["iv_guided"] = summarise(scores["iv_guided"][:guided.ablation_seeds])
    met = criterion(summary)
    return {"summary": {n: summary_json(s) for n, s in summary.items()},
            "before": before_json(before), "ablation": {n: summary_json(s) for n, s in ablation_summary.items()},
            "criterion": {} if met is None else {**asdict(met), "met": met.met},
            "vectors": {seed: {task: report_json(r) for task, r in by_task.items()}
                        for seed, by_task in reports.items()},
            "per_seed": per_seed, "general_before": {"if": before.zero_shot, "icl": before.in_context}}


def before_json(scores: GeneralScores) -> dict:
    """GP and IP before training, averaged exactly (``statistics.mean``; runs average with numpy,
    which can differ in the last bit) as the published results were."""
    return {"gp": statistics.mean(scores.zero_shot.values()),
            "ip": statistics.mean(scores.in_context.values()) if scores.in_context else float("nan")}


def run_json(result: MethodRun) -> dict:
    """One run: scores, metrics, steps per stage and the ``R`` matrix (no loss history)."""
    return {"method": result.method, "seed": result.seed, "tasks": list(result.tasks), "gp": result.gp,
            "ip": result.ip, "general_if": result.general.zero_shot, "general_icl": result.general.in_context,
            "metrics": result.metrics, "steps": list(result.steps), "seconds": result.seconds,
            "R": result.R.tolist(), "baseline": result.baseline.tolist()}


def summary_json(summary: MethodSummary) -> dict:
    std = {f"{k}_std": v for k, v in asdict(summary.std).items()}
    return {**asdict(summary.mean), **std, "n_seeds": summary.n_seeds}


def report_json(report: VectorReport) -> dict:
    return {**{k: v for k, v in asdict(report).items() if k != "task"}, "heads": [list(h) for h in report.heads]}
