"""Chapter 3's reproduction: ``python -m ivedu.experiments dynamics --profile tiny --seeds 3 --json``.

Per seed: fine-tune along the profile's sequence of new tasks (chapter 1's rates and stopping
rule, LoRA merged after each stage) and after every stage, for every general task, re-extract
its vector and compare it with the original model's, score instruction following, restore it
with the original vector and subtract the newest task's (:func:`ivedu.dynamics.run_seed`); in
the first stage, record the overlay. The summary (:func:`ivedu.dynamics.summarise`): the
fields without a suffix are after the first stage, those with ``_final`` after the whole
sequence; ``claim3`` / ``claim4``: the claims' effects with their bootstrap intervals. Per seed,
``checkpoints``: the model along training (``settings.dynamics.checkpoint_every``), and
``new_tasks``: each new task's test exact match before training and after every stage. The
seed draws the batch order, the LoRA initialisation and the extraction prompts."""

from __future__ import annotations

import sys
import time
from dataclasses import asdict

from ivedu.dynamics import Restoration, SeedRun, Stage, TaskAtStage, run_seed, summarise
from ivedu.experiments.checkpoints import Checkpoints, kept_or_made
from ivedu.settings import Settings
from ivedu.study import general_tasks, load_study, load_tasks


def reads(settings: Settings) -> tuple[str, ...]:
    """The sequence, its fine-tuning, and chapter 3's extraction and restoration settings."""
    return ("data.sequence", "finetune", "extraction", "dynamics")


CHECKPOINT_FIELDS = ("iv_cosine", "hidden_cosine", "param_distance", "if_exact_match")


def restoration_json(prefix: str, restored: Restoration | None) -> dict:
    return {} if restored is None else {f"{prefix}_{k}": v for k, v in asdict(restored).items()}


def row_json(row: TaskAtStage) -> dict:
    return {"iv_cosine": row.iv_cosine, "heads_jaccard": row.heads_jaccard,
            "effects_correlation": row.effects_correlation, "hidden_cosine": row.hidden_cosine,
            "param_distance": row.param_distance, "heads": [list(h) for h in row.heads],
            "if_exact_match": row.if_exact_match, "if_first_token": row.if_first_token,
            **restoration_json("restored", row.restored), **restoration_json("subtracted", row.subtracted)}


def stage_json(stage: Stage) -> dict:
    out = {"stage": stage.stage, "task": stage.task}
    if stage.steps is not None:
        out["steps"] = stage.steps
    out["tasks"] = {name: row_json(row) for name, row in stage.rows.items()}
    if stage.overlay:
        out["overlay"] = [{"step": p.step, "old": list(p.old), "new": list(p.new)} for p in stage.overlay]
    return out


def seed_json(run: SeedRun) -> dict:
    checkpoints = [{"stage": c.stage, "step": c.step, "tasks": {name: {k: getattr(row, k) for k in CHECKPOINT_FIELDS}
                                                              for name, row in c.rows.items()}} for c in run.checkpoints]
    return {"seed": run.seed, "stages": [stage_json(s) for s in run.stages], "checkpoints": checkpoints,
            "new_tasks": {"before": list(run.new_before), "after_stage": [list(row) for row in run.new_after]},
            "r2": asdict(run.fits)}


def summary_json(runs: list[SeedRun], overlay_layer: int) -> dict:
    summary = summarise(runs, overlay_layer)
    out: dict = {}
    for suffix, stage in (("", summary.first), ("_final", summary.final)):
        out.update({key + suffix: value for key, value in asdict(stage).items() if key != "restored_share"})
    out["if_original"] = summary.if_original
    out.update({"restored_share": summary.first.restored_share, "restored_share_final": summary.final.restored_share})
    out.update({key: getattr(summary, key) for key in ("overlay_old_start", "overlay_old_end", "overlay_new_start",
                                                       "overlay_new_end")})
    out.update(asdict(summary.fits))
    out.update(summary.claims())
    out["per_seed"] = [{"seed": run.seed, **asdict(run.fits), "if_finetuned": run.stages[1].mean("if_exact_match"),
                        "if_restored": run.stages[1].mean("restored.exact_match")} for run in runs]
    return out


def run(settings: Settings, seeds: list[int], progress: bool = False, checkpoints: Checkpoints | None = None) -> dict:
    """The whole experiment over ``seeds``: a JSON-ready dict with ``summary`` and ``per_seed``.
    ``checkpoints``: keep each finished seed, and each seed's state after every stage, and reuse
    them (``resumed``): on a 2-core CPU one seed of ``smol`` takes hours."""
    lm = load_study(settings)
    world = load_tasks(settings, lm)
    general, sequence = general_tasks(settings, world), [world.task(name) for name in settings.data.sequence]
    began = time.perf_counter()

    def log(message: str) -> None:
        if progress:
            print(f"[{time.perf_counter() - began:6.1f} s] {message}", file=sys.stderr, flush=True)

    if checkpoints is not None:
        log(f"keeping finished seeds (and stages) in {checkpoints.folder}")
    runs = [kept_or_made(checkpoints, f"seed{seed}", lambda seed=seed: run_seed(
                lm, general, sequence, seed, settings.dynamics, settings.finetune, settings.extraction, log,
                checkpoints.partial(f"seed{seed}") if checkpoints is not None else None),
                         SeedRun.as_dict, SeedRun.from_dict) for seed in seeds]
    return {"summary": summary_json(runs, settings.dynamics.overlay_layer), "per_seed": [seed_json(r) for r in runs],
            **({"resumed": checkpoints.reused} if checkpoints is not None else {})}
