"""Chapter 1's diagnosis: fine-tune on a new task, then ask what was lost.

The paper's first finding is that fine-tuning on a new task mostly breaks *instruction
following* -- a general task's answer under its instruction -- while the *knowledge* behind
it survives: the same facts, asked as plain statements, still rank first. This module runs
that diagnosis with the profile's settings:

- :func:`diagnose`: fine-tune on the new task until it is learnt (full fine-tuning or LoRA),
  then score every general task under its instruction, in context and as knowledge;
- :func:`run_sequence`: fine-tune on a sequence of new tasks and keep the ``R`` matrix of the
  continual-learning metrics (:mod:`ivedu.metrics`) and the general tasks after each stage;
- :func:`summarise`: means over seeds of a method's runs, before and after, with the spread;
- :func:`recorded_runs`: a method's runs as the diagnosis command recorded them, for a chapter
  that cannot train every method live on a CPU.

Why the stopping rule: training stops as soon as the new task reaches ``stop_at`` exact
match on its valid split -- the least fine-tuning that does the job, so whatever is lost is
not the result of over-training.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Sequence

from ivedu.arguments import (check_choice, check_ints, check_mapping, check_nonempty, check_number, check_same_length,
                             check_seed, check_str)
from ivedu.controls import bootstrap_interval, constant_score
from ivedu.evaluation import AbilityScores, exact_match_score, mean_abilities, score_abilities
from ivedu.finetune import METHODS, FinetuneResult, finetune, finetune_sequence
from ivedu.metrics import continual_metrics
from ivedu.results import load_result, stale_settings
from ivedu.settings import Settings
from ivedu.study import STUDY_READS, ModelUnderStudy
from ivedu.world import Task

# Short names of the summary, from :class:`ivedu.evaluation.AbilityScores` fields.
SUMMARY_FIELDS = {"if": "if_exact_match", "icl": "icl_exact_match", "kn": "kn_ranking",
                  "if_prob": "if_answer_prob", "kn_prob": "kn_gold_prob"}


@dataclass(frozen=True)
class DiagnosisRun:
    """One method and seed fine-tuned on the new task, and the general tasks after it.

    ``new_task``: exact match on the new task's report split after fine-tuning; ``steps``: the
    steps run before the stopping rule fired; ``losses``: the training loss per step;
    ``general_after``: every general task's :class:`ivedu.evaluation.AbilityScores`.
    """

    seed: int
    method: str
    new_task: float
    steps: int
    train_seconds: float
    trainable_params: int
    losses: tuple[float, ...]
    general_after: tuple[AbilityScores, ...]

    @classmethod
    def from_json(cls, row: dict) -> DiagnosisRun:
        """The run a command wrote as JSON (:func:`dataclasses.asdict`)."""
        return cls(**{**row, "losses": tuple(row["losses"]),
                      "general_after": tuple(AbilityScores(**a) for a in row["general_after"])})


@dataclass(frozen=True)
class SequenceRun:
    """One method and seed fine-tuned on the sequence of new tasks.

    ``R[t][i]``: exact match on ``tasks[i]`` after stage ``t``; ``baseline[i]``: before any
    stage; ``metrics``: :func:`ivedu.metrics.continual_metrics` of ``R``; ``steps``: per
    stage; ``general_if`` / ``general_kn``: mean instruction following (exact match) and
    knowledge (ranking accuracy) of the general tasks before the sequence and after each stage.
    """

    seed: int
    method: str
    tasks: tuple[str, ...]
    R: tuple[tuple[float, ...], ...]
    baseline: tuple[float, ...]
    metrics: dict[str, float]
    steps: tuple[int, ...]
    general_if: tuple[float, ...]
    general_kn: tuple[float, ...]


@dataclass(frozen=True)
class MethodSummary:
    """One method over seeds: each measure before fine-tuning (``*_before``) and after it
    (``*_after``, the mean over general tasks and seeds); ``if``: instruction following, exact
    match; ``icl``: in context; ``kn``: knowledge, ranking accuracy; ``*_prob``: the
    probabilities of the gold answer. ``if_drop`` / ``kn_drop``: before minus after;
    ``new_task`` / ``new_task_before``: exact match on the new task after / before;
    ``steps``: mean steps until learnt; ``sd_over_seeds``: the seeds' standard deviation of
    ``if_after``, ``kn_after`` and ``new_task``."""

    if_before: float
    if_after: float
    icl_before: float
    icl_after: float
    kn_before: float
    kn_after: float
    if_prob_before: float
    if_prob_after: float
    kn_prob_before: float
    kn_prob_after: float
    new_task: float
    new_task_before: float
    steps: float
    if_drop: float
    kn_drop: float
    sd_over_seeds: dict[str, float]


def diagnose(lm: ModelUnderStudy, task: Task, general: Sequence[Task], method: str, seed: int,
             settings: Settings, tuned: FinetuneResult | None = None) -> DiagnosisRun:
    """Fine-tune a copy of ``lm.model`` on ``task`` with ``method`` (``"full"``/``"lora"``) and
    ``seed`` until it is learnt, then score ``general`` on the report split.

    ``tuned``: that same fine-tuning, already run (a chapter's worked example), scored instead
    of trained again; on a real model on a CPU one run takes minutes."""
    check_nonempty("general", general, "general task")
    check_choice("method", method, METHODS)
    check_seed("seed", seed)
    data = settings.data
    result = tuned or finetune(lm, task, settings.finetune, method, seed)
    tuned_lm = lm.with_model(result.model)
    after = score_abilities(tuned_lm, general, data.split, data.k_shots)
    new = exact_match_score(tuned_lm, task, data.split)
    return DiagnosisRun(seed, method, new, result.steps, round(result.seconds, 2), result.trainable_params,
                        tuple(result.losses), tuple(after))


def settings_read(settings: Settings) -> tuple[str, ...]:
    """The settings a diagnosis reads beyond the model and the tasks' examples
    (:data:`ivedu.study.STUDY_READS`): the new task and the fine-tuning, and the sequence where
    the profile trains one in chapter 1."""
    return ("data.new_task", "finetune") + (("data.sequence",) if settings.finetune.sequence_methods else ())


def recorded_runs(settings: Settings, method: str, seeds: Sequence[int]) -> list[DiagnosisRun]:
    """``method``'s runs of ``seeds`` from the diagnosis command's committed result
    (``results/<profile>/diagnosis.json``), checked to have run with the settings of ``settings``
    that the command reads.

    Why: on a CPU a real model cannot fine-tune and score every method inside a chapter's ten
    minutes; the chapter trains ``settings.live.diagnosis_methods`` and reads the others, which
    the command trained with the same code and settings."""
    check_str("method", method)
    check_ints("seeds", seeds, 0)
    command = f"python -m ivedu.experiments diagnosis --profile {settings.profile} --seeds 3 --json --save"
    result = load_result(settings.profile, "diagnosis")
    if result is None:
        raise FileNotFoundError(f"no diagnosis result for the {settings.profile} profile: run `{command}`")
    stale = stale_settings(result, settings.as_dict(), STUDY_READS + settings_read(settings))
    if stale:
        raise ValueError(f"the recorded diagnosis ran with other settings ({', '.join(stale)}): run `{command}`")
    rows = {(row["method"], row["seed"]): row for row in result["per_seed"]}
    missing = [seed for seed in seeds if (method, seed) not in rows]
    if missing:
        raise ValueError(f"the recorded diagnosis has no {method} run for seeds {missing}: run `{command}`")
    return [DiagnosisRun.from_json(rows[method, seed]) for seed in seeds]


def run_sequence(lm: ModelUnderStudy, tasks: Sequence[Task], general: Sequence[Task], method: str, seed: int,
                 settings: Settings) -> SequenceRun:
    """Fine-tune on ``tasks`` in order (each until learnt); the ``R`` matrix, its metrics and
    the general tasks zero-shot after every stage."""
    check_nonempty("tasks", tasks, "new task")
    check_choice("method", method, METHODS)
    check_seed("seed", seed)
    split = settings.data.split
    result = finetune_sequence(lm, tasks, settings.finetune, method, seed, split=split, general=general)
    general_means = [mean_abilities(rows) for rows in result.general]
    return SequenceRun(seed, method, tuple(result.tasks), tuple(tuple(row) for row in result.R.tolist()),
                       tuple(result.baseline.tolist()), continual_metrics(result.R, result.baseline),
                       tuple(s.steps for s in result.stages), tuple(g["if_exact_match"] for g in general_means),
                       tuple(g["kn_ranking"] for g in general_means))


def mean_over_tasks(rows: Sequence[AbilityScores]) -> dict[str, float]:
    """The mean over general tasks of each :data:`SUMMARY_FIELDS` measure."""
    check_nonempty("rows", rows, "general task's AbilityScores")
    return {field: statistics.mean(getattr(r, field) for r in rows) for field in SUMMARY_FIELDS.values()}


def summarise(before: Sequence[AbilityScores], new_task_before: float, runs: Sequence[DiagnosisRun]) -> MethodSummary:
    """Means over seeds (and general tasks) of one method's runs, with the seeds' spread.

    ``before``: the general tasks' scores before fine-tuning; ``new_task_before``: the new
    task's exact match before it.
    """
    check_nonempty("before", before, "general task's AbilityScores")
    check_number("new_task_before", new_task_before, 0.0, 1.0)
    check_nonempty("runs", runs, "DiagnosisRun")
    means_before = mean_abilities(before)
    afters = [mean_over_tasks(r.general_after) for r in runs]
    values: dict = {}
    for short, field in SUMMARY_FIELDS.items():
        values[f"{short}_before"] = means_before[field]
        values[f"{short}_after"] = statistics.mean(a[field] for a in afters)
    spread = {"if_after": _sd([a["if_exact_match"] for a in afters]), "kn_after": _sd([a["kn_ranking"] for a in afters]),
              "new_task": _sd([r.new_task for r in runs])}
    return MethodSummary(**values, new_task=statistics.mean(r.new_task for r in runs), new_task_before=new_task_before,
                         steps=statistics.mean(r.steps for r in runs),
                         if_drop=values["if_before"] - values["if_after"],
                         kn_drop=values["kn_before"] - values["kn_after"], sd_over_seeds=spread)


# Claim 1's knowledge side is judged only on tasks whose knowledge probe ranks the gold answer
# first at least this often before fine-tuning: where the model knows little, "knowledge
# holds" would hold vacuously.
KNOWLEDGE_MIN = 0.6


@dataclass(frozen=True)
class TaskDiagnosis:
    """One general task before and after one method's fine-tuning, means over seeds, with the
    shortcut controls beside instruction following: ``constant``, the exact match of always
    answering the task's most frequent train answer (:func:`ivedu.controls.constant_score`);
    ``if_*`` zero-shot exact match, ``ft_*`` first-token accuracy, ``balanced_*`` balanced
    accuracy (``None`` for tasks with many answers), ``starts_right_after`` answers that only
    start right; ``kn_*`` knowledge ranking, ``knowledge_judged`` whether ``kn_before`` reaches
    :data:`KNOWLEDGE_MIN`; ``taught``: taught by the profile's instruction-tuning stage."""

    task: str
    taught: bool
    constant: float
    if_before: float
    if_after: float
    ft_before: float
    ft_after: float
    balanced_before: float | None
    balanced_after: float | None
    starts_right_after: float
    kn_before: float
    kn_after: float
    knowledge_judged: bool


@dataclass(frozen=True)
class ClaimOne:
    """Claim 1 for one method, with intervals: instruction following's drop over (seed, task)
    pairs of every general task, and knowledge's over the tasks whose knowledge is judged;
    each a mean and its percentile-bootstrap 95% interval. ``if_drop_native`` /
    ``if_drop_taught``: the drop on the original model's own tasks and on the taught ones
    (NaN where a profile has none); ``tasks``: the per-task rows."""

    if_drop: float
    if_drop_interval: tuple[float, float]
    kn_drop: float
    kn_drop_interval: tuple[float, float] | None
    knowledge_tasks: tuple[str, ...]
    if_drop_native: float
    if_drop_taught: float
    tasks: tuple[TaskDiagnosis, ...]


def claim_one(before: Sequence[AbilityScores], runs: Sequence[DiagnosisRun], tasks: Sequence[Task],
              settings: Settings) -> ClaimOne:
    """:class:`ClaimOne` of one method's ``runs`` against the general tasks' scores ``before``."""
    check_nonempty("tasks", tasks, "general task")
    check_nonempty("before", before, "general task's AbilityScores")
    check_same_length("tasks", tasks, "before", before)
    check_nonempty("runs", runs, "DiagnosisRun")
    taught = set(settings.teaching.taught) if settings.teaching else set()
    rows = []
    for i, task in enumerate(tasks):
        b, afters = before[i], [r.general_after[i] for r in runs]

        def mean(field: str):
            values = [getattr(a, field) for a in afters]
            return None if any(v is None for v in values) else statistics.mean(values)

        rows.append(TaskDiagnosis(task.name, task.name in taught, constant_score(task, settings.data.split),
                                  b.if_exact_match, mean("if_exact_match"), b.if_first_token, mean("if_first_token"),
                                  b.if_balanced, mean("if_balanced"), mean("if_starts_right"), b.kn_ranking,
                                  mean("kn_ranking"), b.kn_ranking >= KNOWLEDGE_MIN))
    if_drops = [before[i].if_exact_match - r.general_after[i].if_exact_match for r in runs for i in range(len(tasks))]
    judged = [i for i, row in enumerate(rows) if row.knowledge_judged]
    kn_drops = [before[i].kn_ranking - r.general_after[i].kn_ranking for r in runs for i in judged]

    def drop(keep) -> float:
        values = [row.if_before - row.if_after for row in rows if keep(row)]
        return statistics.mean(values) if values else float("nan")

    return ClaimOne(statistics.mean(if_drops), bootstrap_interval(if_drops),
                    statistics.mean(kn_drops) if kn_drops else float("nan"),
                    bootstrap_interval(kn_drops) if kn_drops else None, tuple(rows[i].task for i in judged),
                    drop(lambda row: not row.taught), drop(lambda row: row.taught), tuple(rows))


def format_claim_one(claim: ClaimOne) -> str:
    """:class:`ClaimOne` as a plain-text table, a row per general task: instruction following
    before -> after beside its controls (the constant answer, first-token accuracy, balanced
    accuracy, answers that only start right) and knowledge, marked where it is judged; then the
    drops with their intervals."""
    def num(x) -> str:
        return "  -  " if x is None else f"{x:.2f}"

    width = max(12, *(len(r.task) + 1 for r in claim.tasks))
    lines = [f"{'task':<{width}}{'kind':<8}{'const':>6}{'IF exact':>14}{'first token':>14}{'balanced':>14}"
             f"{'starts':>8}{'knowledge':>14}"]
    for r in claim.tasks:
        lines.append(f"{r.task:<{width}}{'taught' if r.taught else 'native':<8}{r.constant:>6.2f}"
                     f"{r.if_before:>6.2f} -> {r.if_after:.2f}{r.ft_before:>6.2f} -> {r.ft_after:.2f}"
                     f"{num(r.balanced_before):>6} -> {num(r.balanced_after)}{r.starts_right_after:>8.2f}"
                     f"{r.kn_before:>6.2f} -> {r.kn_after:.2f}{' *' if r.knowledge_judged else ''}")
    kn = ("no task's knowledge can be judged" if claim.kn_drop_interval is None else
          f"knowledge drop {claim.kn_drop:.2f} [{claim.kn_drop_interval[0]:.2f}, {claim.kn_drop_interval[1]:.2f}] "
          f"on the tasks marked * (probe >= {KNOWLEDGE_MIN} before)")
    lines.append(f"instruction following drop {claim.if_drop:.2f} [{claim.if_drop_interval[0]:.2f}, "
                 f"{claim.if_drop_interval[1]:.2f}] (95% bootstrap interval over seeds x tasks); {kn}")
    return "\n".join(lines)


def format_summary(summaries: dict[str, MethodSummary]) -> str:
    """A plain-text table: each measure before -> after (seeds' sd), one column per method."""
    check_mapping("summaries", summaries, "method")
    rows = (("new task, exact match", "new_task_before", "new_task", None),
            ("IF exact match", "if_before", "if_after", "if_after"),
            ("ICL exact match (in context)", "icl_before", "icl_after", None),
            ("KN ranking accuracy", "kn_before", "kn_after", "kn_after"),
            ("IF P(conformant answer)", "if_prob_before", "if_prob_after", None),
            ("KN P(gold answer)", "kn_prob_before", "kn_prob_after", None))
    lines = [f"{'':<28}" + "".join(f"{m + ': before -> after (sd)':>32}" for m in summaries)]
    for label, before, after, sd in rows:
        cells = []
        for s in summaries.values():
            spread = f" ({s.sd_over_seeds[sd]:.2f})" if sd else ""
            cells.append(f"{getattr(s, before):>17.2f} -> {getattr(s, after):.2f}{spread:<7}")
        lines.append(f"{label:<28}" + "".join(f"{c:>32}" for c in cells))
    lines.append(f"{'steps until learnt':<28}" + "".join(f"{s.steps:>23.0f}{'':9}" for s in summaries.values()))
    return "\n".join(lines)


def _sd(xs: Sequence[float]) -> float:
    return statistics.stdev(xs) if len(xs) > 1 else 0.0

