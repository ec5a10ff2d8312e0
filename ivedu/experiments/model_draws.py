"""How much the book's headline numbers depend on the tiny model's own training:
``python -m ivedu.experiments model_draws --seeds 3 --json``.

Every chapter's reproduction command varies the *downstream* seed (batch order, LoRA
initialisation, random vectors) on the one shipped checkpoint. This command varies the
checkpoint itself. For each seed it trains a tiny model from scratch with the shipped recipe,
``TinyConfig(seed=seed)``, then measures it with the chapters' own code and downstream seed 0:

- quality, as the tiny model's README table reports it: held-out exact match under the
  instruction and knowledge ranking, per general task (:func:`ivedu.evaluation.score_tasks`);
- chapter 1: instruction following and knowledge on the test split before and after
  fine-tuning on the new task, full and LoRA (:func:`ivedu.diagnosis.diagnose`);
- chapter 2: the intervention on instruction-less prompts, the vector against the bare
  prompt, a random vector and another task's vector (:func:`ivedu.experiments.extraction.run_seed`).

The weights also depend on the torch thread count (another count rounds differently), so
the result records it. Seed 0 with one thread is the shipped checkpoint. About 10 minutes
per seed with one thread on a 2-core CPU: this is a study, not a chapter's command.
"""

from __future__ import annotations

import dataclasses
import statistics

import torch

from ivedu.diagnosis import diagnose, mean_over_tasks
from ivedu.evaluation import mean_abilities, score_abilities, score_tasks
from ivedu.experiments import extraction
from ivedu.experiments.log import Log
from ivedu.finetune import METHODS
from ivedu.prompts import TINY_FORMAT
from ivedu.settings import Settings
from ivedu.study import ModelUnderStudy, general_tasks
from ivedu.toy import TinyConfig, train_tiny_model
from ivedu.world import build_world

# The per-draw numbers the summary gives the mean, lowest and highest of.
MEASURES = ("lowest_heldout_em", "lowest_kn_ranking", "if_before", "if_drop_full", "if_drop_lora",
            "kn_drop_full", "kn_drop_lora", "new_task_full", "new_task_lora", "iv_gain",
            "random_minus_corrupted", "other_minus_own")


def reads(settings: Settings) -> tuple[str, ...]:
    """Chapters 1 and 2 on each draw: the new task, its fine-tuning, the scan."""
    return ("data.new_task", "finetune", "extraction")


def measure_draw(config: TinyConfig, settings: Settings) -> dict:
    """Train one tiny model with ``config`` and measure it as the README, chapter 1 and chapter 2 do."""
    world = build_world(config.world_seed)
    model, tokenizer, history = train_tiny_model(config, world)
    lm = ModelUnderStudy(model, tokenizer, TINY_FORMAT, f"tiny (seed {config.seed})")
    quality = score_tasks(lm, world.general)
    general = general_tasks(settings, world)
    before = mean_abilities(score_abilities(lm, general, settings.data.split, settings.data.k_shots))
    row: dict = {
        "seed": config.seed,
        "threads": torch.get_num_threads(),
        "train_seconds": round(history.seconds, 1),
        "heldout_em": {r.task: r.exact_match for r in quality},
        "kn_ranking": {r.task: r.ranking_accuracy for r in quality},
        "if_before": before["if_exact_match"],
    }
    row["lowest_heldout_em"] = min(row["heldout_em"].values())
    row["lowest_kn_ranking"] = min(row["kn_ranking"].values())
    for method in METHODS:
        run = diagnose(lm, world.task(settings.data.new_task), general, method, 0, settings)
        after = mean_over_tasks(run.general_after)
        row[f"if_drop_{method}"] = before["if_exact_match"] - after["if_exact_match"]
        row[f"kn_drop_{method}"] = before["kn_ranking"] - after["kn_ranking"]
        row[f"new_task_{method}"] = run.new_task
    scores = extraction.run_seed(lm, list(world.general), 0, settings)
    row["iv_gain"] = scores["with_iv"] - scores["corrupted"]
    row["random_minus_corrupted"] = scores["with_random"] - scores["corrupted"]
    row["other_minus_own"] = scores["with_other_task"] - scores["with_iv"]
    row["extraction"] = {key: scores[key] for key in (*extraction.FIELDS, "best_layer", "scale")}
    return row


def summarise(rows: list[dict]) -> dict:
    """Mean, lowest and highest of each of :data:`MEASURES` over the draws."""
    return {name: {"mean": statistics.mean(r[name] for r in rows), "min": min(r[name] for r in rows),
                   "max": max(r[name] for r in rows)} for name in MEASURES}


def run(settings: Settings, seeds: list[int], progress: bool = False, config: TinyConfig = TinyConfig()) -> dict:
    """One draw per seed (``config`` with that seed): ``summary`` over draws and ``per_seed`` rows."""
    if settings.model != "tiny":
        raise SystemExit("model_draws retrains the tiny model: run it with --profile tiny")
    log = Log(progress)
    rows = []
    for seed in seeds:
        rows.append(measure_draw(dataclasses.replace(config, seed=seed), settings))
        drops = ", ".join(f"{m} {rows[-1][f'if_drop_{m}']:.2f}" for m in METHODS)
        log(f"draw {seed}: lowest held-out EM {rows[-1]['lowest_heldout_em']:.2f}, IF drop {drops}")
    return {"summary": summarise(rows), "per_seed": rows, "threads": torch.get_num_threads()}
