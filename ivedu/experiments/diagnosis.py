"""Chapter 1's reproduction: ``python -m ivedu.experiments diagnosis --seeds 3 --json``.

On the shipped tiny model, for each seed and each method (full fine-tuning, LoRA):
fine-tune on one new task until it is learnt, then score every general task before and
after -- instruction following (exact match of the greedy answer under the instruction, and
in context with 4 demonstrations) and knowledge (ranking of the gold answer in statement
form). Then fine-tune on a sequence of three new tasks and report the continual-learning
metrics of its ``R`` matrix. The seed draws the batch order and the LoRA initialisation;
the model and the evaluation are the same for every seed.

The settings (:data:`SETTINGS`) and why:

- the new task is ``first_french`` ("translate the first item to french"): a composed task,
  like the paper's "Last-Spanish", whose answers conflict with two general tasks' habits
  (``first`` answers the English item, ``french`` translates a single word); the model
  cannot do it before fine-tuning;
- training stops as soon as the new task is learnt (exact match >= 0.9 on its valid split,
  checked every 25 steps): the least fine-tuning that does the job, so whatever is lost is
  not the result of over-training;
- learning rates: 3e-4 for full fine-tuning (a quarter of the rate the tiny model was
  instruction-tuned at), 1e-3 for LoRA (rank 8, alpha 16, every linear projection), whose
  low-rank updates need a larger rate, as in TRACE's 1e-5 / 1e-4.
"""

from __future__ import annotations

import statistics
import sys
import time

from ivedu.evaluation import instruction_following_score, mean_abilities, score_abilities
from ivedu.finetune import finetune, finetune_sequence
from ivedu.metrics import continual_metrics
from ivedu.models import load_model
from ivedu.prompts import TINY_FORMAT, PromptFormat
from ivedu.world import build_world

SETTINGS: dict = {
    "model": "tiny",
    "world_seed": 0,
    "task": "first_french",
    "sequence": ["first_french", "last_french", "middle"],
    "general": None,  # names of the general tasks to score; None: all of them
    "split": "test",
    "k": 4,
    "batch_size": 16,
    "max_steps": 600,
    "stop_at": 0.9,
    "eval_every": 25,
    "schedule": "constant",
    "warmup_steps": 10,
    "methods": {"full": {"lr": 3e-4}, "lora": {"lr": 1e-3, "lora_rank": 8, "lora_alpha": 16}},
}

# Short names of the summary, from :class:`ivedu.evaluation.AbilityScores` fields.
SUMMARY_FIELDS = {"if": "if_exact_match", "icl": "icl_exact_match", "kn": "kn_ranking",
                  "if_prob": "if_answer_prob", "kn_prob": "kn_gold_prob"}


def training_kwargs(method: str, settings: dict = SETTINGS) -> dict:
    """The keyword arguments of :func:`ivedu.finetune.finetune` for ``method``."""
    return dict(method=method, steps=settings["max_steps"], batch_size=settings["batch_size"],
                stop_at=settings["stop_at"], eval_every=settings["eval_every"], schedule=settings["schedule"],
                warmup_steps=settings["warmup_steps"], **settings["methods"][method])


def general_tasks(world, settings: dict = SETTINGS) -> list:
    """The general tasks the experiment scores (all of them unless ``settings["general"]`` names some)."""
    names = settings.get("general")
    return list(world.general) if names is None else [world.task(n) for n in names]


def diagnose(model, tokenizer, world, method: str, seed: int, settings: dict = SETTINGS,
             fmt: PromptFormat = TINY_FORMAT) -> dict:
    """Fine-tune on the new task with ``method`` and ``seed``; score the general tasks after.

    Returns the new task's exact match, the steps run, the loss curve and per-task
    :class:`ivedu.evaluation.AbilityScores` as dicts (``general_after``).
    """
    task = world.task(settings["task"])
    result = finetune(model, tokenizer, task, seed=seed, fmt=fmt, **training_kwargs(method, settings))
    after = score_abilities(result.model, tokenizer, general_tasks(world, settings), settings["split"], settings["k"],
                            fmt=fmt)
    return {
        "seed": seed,
        "method": method,
        "new_task": instruction_following_score(result.model, tokenizer, task, settings["split"], fmt=fmt).exact_match,
        "steps": result.steps,
        "train_seconds": round(result.seconds, 2),
        "trainable_params": result.trainable_params,
        "losses": result.losses,
        "general_after": [row.as_dict() for row in after],
    }


def sequence(model, tokenizer, world, method: str, seed: int, settings: dict = SETTINGS,
             fmt: PromptFormat = TINY_FORMAT) -> dict:
    """Fine-tune on the sequence of new tasks; its ``R`` matrix, metrics and general scores per stage."""
    kwargs = training_kwargs(method, settings)
    result = finetune_sequence(model, tokenizer, [world.task(n) for n in settings["sequence"]],
                               seed=seed, general_tasks=general_tasks(world, settings), split=settings["split"],
                               general_split=settings["split"], k=0, fmt=fmt, **kwargs)
    general = [mean_abilities(rows) for rows in result.general]
    return {
        "seed": seed,
        "method": method,
        "tasks": result.tasks,
        "R": result.R.tolist(),
        "baseline": result.baseline.tolist(),
        "metrics": continual_metrics(result.R, result.baseline),
        "steps": [s.steps for s in result.stages],
        "general_if": [g["if_exact_match"] for g in general],
        "general_kn": [g["kn_ranking"] for g in general],
    }


def summarise(before: dict, runs: list[dict]) -> dict:
    """Means over seeds (and general tasks) of one method's runs, with the seeds' spread."""
    out: dict = {}
    afters = [mean_abilities_dicts(r["general_after"]) for r in runs]
    for short, field in SUMMARY_FIELDS.items():
        out[f"{short}_before"] = before[field]
        out[f"{short}_after"] = statistics.mean(a[field] for a in afters)
    out["new_task"] = statistics.mean(r["new_task"] for r in runs)
    out["steps"] = statistics.mean(r["steps"] for r in runs)
    out["if_drop"] = out["if_before"] - out["if_after"]
    out["kn_drop"] = out["kn_before"] - out["kn_after"]
    out["sd_over_seeds"] = {key: _sd([a[field] for a in afters]) for key, field in
                            (("if_after", "if_exact_match"), ("kn_after", "kn_ranking"))}
    out["sd_over_seeds"]["new_task"] = _sd([r["new_task"] for r in runs])
    return out


def mean_abilities_dicts(rows: list[dict]) -> dict:
    """:func:`ivedu.evaluation.mean_abilities` of rows stored as dicts."""
    return {field: statistics.mean(r[field] for r in rows) for field in SUMMARY_FIELDS.values()}


def run(seeds: list[int], settings: dict = SETTINGS, with_sequence: bool = True,
        progress: bool | None = None) -> dict:
    """The whole experiment over ``seeds``: a JSON-ready dict with ``summary``, ``per_seed``, ``config``.

    ``summary[method]`` has ``if_before``, ``if_after``, ``kn_before``, ``kn_after`` (means
    over general tasks and seeds; exact match and ranking accuracy), ``new_task`` (exact
    match on the fine-tuning task), the in-context and probability variants, and the seeds'
    standard deviation. ``summary["sequence"][method]`` has the continual-learning metrics
    of the sequence, averaged over seeds. ``progress`` (default: when stderr is a terminal)
    prints one line per run on stderr.
    """
    progress = sys.stderr.isatty() if progress is None else progress
    model, tokenizer = load_model(settings["model"])
    world = build_world(settings["world_seed"])
    start = time.perf_counter()
    before_rows = score_abilities(model, tokenizer, general_tasks(world, settings), settings["split"], settings["k"])
    before = mean_abilities(before_rows)
    new_before = instruction_following_score(model, tokenizer, world.task(settings["task"]),
                                             settings["split"]).exact_match
    per_seed, sequences = [], []
    for seed in seeds:
        for method in settings["methods"]:
            per_seed.append(diagnose(model, tokenizer, world, method, seed, settings))
            _log(progress, start, f"seed {seed} {method}: new task {per_seed[-1]['new_task']:.2f} "
                               f"after {per_seed[-1]['steps']} steps")
            if with_sequence:
                sequences.append(sequence(model, tokenizer, world, method, seed, settings))
                _log(progress, start, f"seed {seed} {method}: sequence done")
    summary = {method: summarise(before, [r for r in per_seed if r["method"] == method])
               for method in settings["methods"]}
    for method in settings["methods"]:
        summary[method]["new_task_before"] = new_before
    if with_sequence:
        summary["sequence"] = {
            method: {key: statistics.mean(s["metrics"][key] for s in sequences if s["method"] == method)
                     for key in sequences[0]["metrics"]}
            for method in settings["methods"]}
    return {"summary": summary, "per_seed": per_seed, "sequences": sequences,
            "general_before": [row.as_dict() for row in before_rows], "config": {**settings, "seeds": list(seeds)}}


def format_summary(summary: dict, methods=None) -> str:
    """A plain-text table of :func:`run`'s summary: each measure before and after, per method."""
    methods = [m for m in summary if m != "sequence"] if methods is None else methods
    rows = (("new task, exact match", "new_task_before", "new_task", None),
            ("IF exact match", "if_before", "if_after", "if_after"),
            ("ICL exact match (4-shot)", "icl_before", "icl_after", None),
            ("KN ranking accuracy", "kn_before", "kn_after", "kn_after"),
            ("IF P(conformant answer)", "if_prob_before", "if_prob_after", None),
            ("KN P(gold answer)", "kn_prob_before", "kn_prob_after", None))
    lines = [f"{'':<26}" + "".join(f"{m + ': before -> after (sd)':>32}" for m in methods)]
    for label, b, a, sd in rows:
        cells = []
        for m in methods:
            s = summary[m]
            spread = f" ({s['sd_over_seeds'][sd]:.2f})" if sd else ""
            cells.append(f"{s[b]:>17.2f} -> {s[a]:.2f}{spread:<7}")
        lines.append(f"{label:<26}" + "".join(f"{c:>32}" for c in cells))
    lines.append(f"{'steps until learnt':<26}" + "".join(f"{summary[m]['steps']:>23.0f}{'':9}" for m in methods))
    return "\n".join(lines)


def _sd(xs: list[float]) -> float:
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def _log(enabled: bool, start: float, message: str) -> None:
    if enabled:
        print(f"[{time.perf_counter() - start:6.1f} s] {message}", file=sys.stderr, flush=True)
