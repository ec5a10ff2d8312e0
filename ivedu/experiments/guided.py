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

from ivedu.continual import (GeneralScores, MethodScores, ablation_methods, criterion, general_scores, headline,
                             methods, run_method, summarise)
from ivedu.experiments.checkpoints import Checkpoints
from ivedu.experiments.log import Log
from ivedu.finetune import sequence_scores
from ivedu.guided import new_task_vectors
from ivedu.settings import Settings
from ivedu.study import general_tasks, load_study, load_tasks


def reads(settings: Settings) -> tuple[str, ...]:
    """The sequence, its fine-tuning, the scan's prompt styles (not chapter 2's sweep), chapter 4's loss."""
    return ("data.sequence", "finetune", "extraction.clean_style", "extraction.corrupted_style", "guided")


def run(settings: Settings, seeds: list[int], progress: bool = False, checkpoints: Checkpoints | None = None) -> dict:
    """Every method on ``settings.data.sequence``, and the ablation: see :func:`compare`."""
    return compare(settings, seeds, settings.data.sequence, settings.guided.methods, ablation=True,
                   progress=progress, checkpoints=checkpoints)


def compare(settings: Settings, seeds: list[int], sequence: Sequence[str], names: Sequence[str],
            ablation: bool, progress: bool = False, checkpoints: Checkpoints | None = None) -> dict:
    """The methods ``names`` on ``sequence``, one run per seed, as a JSON-ready dict.

    ``summary[method]``: GP, IP, AP, FP, forgetting, BWT and steps (means over seeds) with each
    one's ``*_std`` and ``n_seeds``; ``before``: GP and IP before training (``general_before``:
    per task); ``vectors[seed][task]``: what each new task's vector does; ``ablation``: the same
    for each dropped term on the ablation seeds; ``criterion``: the claim's bars; ``per_seed``.
    The sequence's scores before training are measured once (every method starts from the same
    model). ``checkpoints``: keep each finished run and reuse those kept before (``resumed``)."""
    log = Log(progress)
    lm = load_study(settings)
    world = load_tasks(settings, lm)
    tasks, general = [world.task(n) for n in sequence], general_tasks(settings, world)
    data, guided = settings.data, settings.guided
    before = general_scores(lm, general, data.split, data.k_shots)
    baseline = sequence_scores(lm, tasks, data.split)
    registry = methods(guided.loss)
    per_seed, reports, scores, ablation_scores = [], {}, {n: [] for n in names}, {}
    if checkpoints is not None:
        log(f"keeping finished runs in {checkpoints.folder}")
    for i, seed in enumerate(seeds):
        todo = {n: registry[n] for n in names}
        if ablation and i < guided.ablation_seeds:
            todo.update(ablation_methods(guided.loss))
        vectors = None
        for name, method in todo.items():
            key = f"seed{seed}-{name}"
            row = checkpoints.get(key) if checkpoints is not None else None
            if row is None:
                if vectors is None:
                    vectors, made = new_task_vectors(lm, tasks, settings, seed)
                    reports[seed] = {task: r.as_json() for task, r in made.items()}
                result = run_method(lm, tasks, general, method, seed, settings.finetune, max_steps=guided.max_steps,
                                    vectors=vectors, split=data.split, k=data.k_shots,
                                    stop_examples=guided.stop_examples, baseline=baseline)
                row = {**result.as_json(), "vectors": reports[seed]}
                if checkpoints is not None:
                    checkpoints.put(key, row)
            reports.setdefault(seed, row["vectors"])
            per_seed.append({k: v for k, v in row.items() if k != "vectors"})
            (scores if name in scores else ablation_scores).setdefault(name, []).append(MethodScores.from_run_json(row))
            log(f"seed {seed} {name}: GP {row['gp']:.2f} IP {row['ip']:.2f} AP {row['metrics']['AP']:.2f} "
                f"({row['seconds']:.0f} s{', reused' if checkpoints and key in checkpoints.reused else ''})")
    summary = {name: summarise(s) for name, s in scores.items()}
    ablation_summary = {name: summarise(s) for name, s in ablation_scores.items()}
    if ablation_summary and "iv_guided" in scores:
        ablation_summary["iv_guided"] = summarise(scores["iv_guided"][:guided.ablation_seeds])
    met, top = criterion(summary), headline(per_seed)
    return {"summary": {n: s.as_json() for n, s in summary.items()},
            "before": before_json(before), "ablation": {n: s.as_json() for n, s in ablation_summary.items()},
            "criterion": {} if met is None else {**asdict(met), "met": met.met},
            "headline": {} if top is None else asdict(top), "vectors": reports,
            "per_seed": per_seed, "general_before": {"if": before.zero_shot, "icl": before.in_context},
            **({"resumed": checkpoints.reused} if checkpoints is not None else {})}


def before_json(scores: GeneralScores) -> dict:
    """GP and IP before training, averaged exactly (``statistics.mean``; runs average with numpy,
    which can differ in the last bit) as the published results were."""
    return {"gp": statistics.mean(scores.zero_shot.values()),
            "ip": statistics.mean(scores.in_context.values()) if scores.in_context else float("nan")}
