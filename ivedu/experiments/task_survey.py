"""Which tasks the profile's model does under its instruction:
``python -m ivedu.experiments task_survey --profile smol --seeds 1 --json``.

For every task of the profile's world -- on ``smol`` and the GPU profiles every function-vector
dataset that ships with ivedu, not only the profile's own -- the first ``N_EXAMPLES`` test
examples under instruction phrasing 0: first-token accuracy (the rule that keeps "known"
examples), greedy exact match, how often the model repeats the input, and how often the first
token alone gives credit (:func:`ivedu.evaluation.survey_task`). This is the evidence a
profile's general tasks are chosen on. Deterministic: the seeds are not used.
"""

from __future__ import annotations

from dataclasses import asdict, replace

from ivedu.datasets import TASKS
from ivedu.evaluation import survey_task
from ivedu.experiments.log import Log
from ivedu.settings import Settings
from ivedu.study import load_original, load_study, load_tasks

N_EXAMPLES = 24


def reads(settings: Settings) -> tuple[str, ...]:
    """Only the model and the examples (:data:`ivedu.study.STUDY_READS`)."""
    return ()


def run(settings: Settings, seeds: list[int], progress: bool = False) -> dict:
    """``summary[task]``: the :class:`ivedu.evaluation.TaskSurvey` fields of each task in the model
    under study; ``original[task]``: the same in the model as loaded, where the profile adds an
    instruction-tuning stage (which tasks are native, which taught)."""
    log = Log(progress)
    data = settings.data
    if data.world == "function_vectors":  # every shipped dataset, as general tasks, unfiltered (none is trained)
        data = replace(data, general_tasks=tuple(sorted(TASKS)), new_task="", sequence=(), control_sequence=(),
                       related=())
    world = load_tasks(replace(settings, data=replace(data, known_only=False)))

    def survey(lm) -> dict:
        rows = {}
        for task in world.tasks:
            row = asdict(survey_task(lm, task, "test", N_EXAMPLES))
            rows[row.pop("task")] = row
            log(f"{lm.name} {task.name}: first token {row['first_token']:.2f}, exact match {row['exact_match']:.2f}")
        return rows

    original = survey(load_original(settings)) if settings.teaching is not None else None
    return {"summary": survey(load_study(settings)), "per_seed": [], "n_examples": N_EXAMPLES,
            "model": settings.model, **({"original": original} if original is not None else {})}
