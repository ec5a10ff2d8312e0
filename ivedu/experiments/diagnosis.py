"""Chapter 1's reproduction: ``python -m ivedu.experiments diagnosis --profile tiny --seeds 3 --json``.

For each seed and each method (full fine-tuning, LoRA): fine-tune on the profile's new task
until it is learnt, then score every general task before and after -- instruction following
(exact match under the instruction, and in context) and knowledge (ranking of the gold answer
in statement form); then fine-tune on the sequence of new tasks (with each method of
``settings.finetune.sequence_methods``) and report the continual-learning metrics of its ``R``
matrix (:mod:`ivedu.diagnosis`). The seed draws the
batch order and the LoRA initialisation; the model and the evaluation are the same for every seed.
"""

from __future__ import annotations

import dataclasses
import statistics

from ivedu.diagnosis import claim_one, diagnose, run_sequence, settings_read, summarise
from ivedu.evaluation import instruction_following_score, score_abilities
from ivedu.finetune import METHODS
from ivedu.settings import Settings
from ivedu.study import general_tasks, load_study, load_tasks
from ivedu.experiments.log import Log


reads = settings_read  # chapter 1's new task and fine-tuning, and the sequence where trained here


def run(settings: Settings, seeds: list[int], progress: bool = False, with_sequence: bool = True) -> dict:
    """``summary[method]``: :class:`ivedu.diagnosis.MethodSummary` fields; ``summary["claim"][method]``:
    :class:`ivedu.diagnosis.ClaimOne`, the claim with its controls and intervals; ``summary["sequence"]
    [method]``: the sequence's continual-learning metrics, averaged over seeds; ``per_seed``
    and ``sequences``: every run; ``general_before``: the general tasks before fine-tuning."""
    log = Log(progress)
    lm = load_study(settings)
    world = load_tasks(settings, lm)
    data = settings.data
    general, task = general_tasks(settings, world), world.task(data.new_task)
    before = score_abilities(lm, general, data.split, data.k_shots)
    new_before = instruction_following_score(lm, task, data.split).exact_match
    runs, sequences = [], []
    for seed in seeds:
        for method in METHODS:
            runs.append(diagnose(lm, task, general, method, seed, settings))
            log(f"seed {seed} {method}: new task {runs[-1].new_task:.2f} after {runs[-1].steps} steps, general IF "
                f"{[round(a.if_exact_match, 2) for a in runs[-1].general_after]}")
            if with_sequence and method in settings.finetune.sequence_methods:
                sequences.append(run_sequence(lm, [world.task(n) for n in data.sequence], general, method, seed,
                                              settings))
                seq = sequences[-1]
                log(f"seed {seed} {method}: sequence steps {list(seq.steps)}, each task after its stage "
                    f"{[round(seq.R[t][t], 2) for t in range(len(seq.tasks))]}, general IF "
                    f"{[round(x, 2) for x in seq.general_if]}")
    summary: dict = {m: dataclasses.asdict(summarise(before, new_before, [r for r in runs if r.method == m]))
                     for m in METHODS}
    summary["claim"] = {m: dataclasses.asdict(claim_one(before, [r for r in runs if r.method == m], general, settings))
                        for m in METHODS}
    if sequences:
        summary["sequence"] = {m: {key: statistics.mean(s.metrics[key] for s in sequences if s.method == m)
                                   for key in sequences[0].metrics}
                               for m in METHODS if m in settings.finetune.sequence_methods}
    return {"summary": summary, "per_seed": [dataclasses.asdict(r) for r in runs],
            "sequences": [dataclasses.asdict(s) for s in sequences],
            "general_before": [row.as_dict() for row in before]}
