"""Chapter 3's reproduction: ``python -m ivedu.experiments dynamics --seeds 3 --json``.

Per seed, on the shipped tiny model: fine-tune on chapter 1's sequence of three new tasks
(LoRA, merged after each stage, the stopping rule and rates of chapter 1), and after every
stage, for every general task:

- re-extract its instruction vector (chapter 2's recipe, ``k`` heads) and compare it with
  the original model's: cosine, Jaccard overlap of the heads, correlation of the effect maps;
- score instruction following (exact match under the instruction, test split) and set it
  against three similarities to the original model -- vector cosine, last-layer hidden-state
  cosine, parameter distance -- with the R² of a straight-line fit over tasks x stages;
- **restore**: add the *original* model's vector to the fine-tuned model, the layer and
  scale chosen per task on valid prompts, reported on test prompts; and the converse,
  subtract the newest task's vector (extracted from the fine-tuned model).

During the first stage it also records the residual stream after every layer at the last
token of general-task prompts every few steps, and projects it on each prompt's own task's
original vector and on the new task's vector (the overlay).

The summary's ``if_original``, ``if_finetuned`` and ``if_restored`` are for the model after
the first stage (chapter 1's fine-tuning, one new task); the same after the whole sequence
carry the suffix ``_final``. The seed draws the batch order, the LoRA initialisation and the
extraction prompts; the model and the test prompts are the same for every seed.
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

from ivedu.architectures import model_layout
from ivedu.dynamics import (StageVectors, choose_steering, cosine, effects_correlation, extract_vectors,
                            hidden_state_similarity, instructed_set, jaccard, parameter_distance, projections,
                            r_squared, residual_states, steered_scores, watch_training)
from ivedu.experiments.diagnosis import SETTINGS as DIAGNOSIS, training_kwargs
from ivedu.finetune import finetune
from ivedu.intervention import random_vector_like
from ivedu.models import load_model
from ivedu.prompts import TINY_FORMAT, PromptFormat
from ivedu.world import build_world

SETTINGS: dict = {
    "model": "tiny",
    "world_seed": 0,
    "sequence": DIAGNOSIS["sequence"],   # first_french -> last_french -> middle, as in chapter 1
    "method": "lora",                    # LoRA as in the authors' code; merged after each stage
    "k": 2,                              # heads per vector: chapter 2's choice on valid
    "n_prompts": 48,                     # train prompts per task for each scan
    "scales": (0.5, 1.0, 2.0, 4.0),      # restoration grid (every layer x these scales), chosen on valid
    "site": "attention",                 # where vectors are added, as in chapter 2
    "watch_every": 10,                   # steps between hidden-state snapshots in stage 1
    "watch_prompts": 8,                  # valid prompts per general task for the snapshots
    "overlay_layer": 0,                  # residual stream read for the summary: where chapter 2 adds vectors
    "diagnosis": DIAGNOSIS,              # chapter 1's training settings (rates, stopping rule, batch size)
}


def settings_for(profile) -> dict:
    """This experiment's settings for a profile (:func:`ivedu.profiles.settings`): its model,
    sequence, scan size and chapter 1's training settings; the rest as in :data:`SETTINGS`."""
    return {**SETTINGS, "model": profile.model, "world_seed": profile.world_seed,
            "sequence": list(profile.sequence), "n_prompts": profile.n_prompts, "diagnosis": profile.diagnosis()}


def training(settings: dict = SETTINGS) -> dict:
    """The keyword arguments of :func:`ivedu.finetune.finetune` for every stage."""
    return training_kwargs(settings["method"], settings["diagnosis"])


def restoration(model, tokenizer, tasks, vectors: dict, settings: dict = SETTINGS, sign: float = 1.0,
                seed: int = 0, fmt: PromptFormat = TINY_FORMAT) -> dict:
    """Per task: the steering chosen on valid, and test scores with ``vectors[task]`` added.

    ``sign=-1`` subtracts the vectors (the scales are negated). Each task also gets the
    control: a random vector of the same norm at the same layer and scale (``random_*``).
    Returns task -> ``{"layer", "scale", "exact_match", "first_token", "random_exact_match",
    "random_first_token"}``.
    """
    n_layers = model_layout(model).n_layers
    out = {}
    for task in tasks:
        vector = vectors[task.name]
        steering = choose_steering(model, tokenizer, instructed_set(task, "valid", fmt), vector, range(n_layers),
                                   [sign * s for s in settings["scales"]], settings["site"])
        test = instructed_set(task, "test", fmt)
        random = random_vector_like(vector, seed)
        out[task.name] = {"layer": steering.layer, "scale": steering.scale,
                          **steered_scores(model, tokenizer, test, vector, steering, settings["site"]),
                          **{f"random_{k}": v for k, v in
                             steered_scores(model, tokenizer, test, random, steering, settings["site"]).items()}}
    return out


def compare_stage(original, model, tokenizer, tasks, start: StageVectors, now: StageVectors,
                  fmt: PromptFormat = TINY_FORMAT) -> dict:
    """Per task: how its vector, heads and effect map moved since ``start``, the hidden-state
    similarity to ``original``, the distance of the weights, and instruction following now."""
    distance = parameter_distance(original, model)
    rows = {}
    for task in tasks:
        name = task.name
        test = instructed_set(task, "test", fmt)
        rows[name] = {
            "iv_cosine": cosine(start.vectors[name].vector, now.vectors[name].vector),
            "heads_jaccard": jaccard(start.vectors[name].heads, now.vectors[name].heads),
            "effects_correlation": effects_correlation(start.scans[name].effects, now.scans[name].effects),
            "hidden_cosine": hidden_state_similarity(original, model, tokenizer, test.prompts),
            "param_distance": distance,
            "heads": [list(h) for h in now.vectors[name].heads],
            **{f"if_{k}": v for k, v in steered_scores(model, tokenizer, test, None, None).items()},
        }
    return rows


def analyse_stage(original, model, tokenizer, world, start: StageVectors, new_task: str, seed: int,
                  settings: dict = SETTINGS, restore: bool = True,
                  fmt: PromptFormat = TINY_FORMAT) -> tuple[dict, StageVectors]:
    """Everything measured after one stage of fine-tuning, and the vectors re-extracted in it.

    ``start``: the original model's vectors. The new task's vector is extracted too (it is
    the one subtracted). With ``restore``, each row also has ``restored_*`` (the original
    vector added), ``subtracted_*`` (the new task's vector subtracted) and their random
    controls, each with the layer and scale chosen on valid.
    """
    tasks = list(world.general)
    now = extract_vectors(model, tokenizer, tasks + [world.task(new_task)], settings["k"], settings["n_prompts"], seed,
                          fmt=fmt)
    rows = compare_stage(original, model, tokenizer, tasks, start, now, fmt)
    if restore:
        plus = restoration(model, tokenizer, tasks, {t.name: start.vectors[t.name].vector for t in tasks},
                           settings, seed=seed, fmt=fmt)
        minus = restoration(model, tokenizer, tasks, {t.name: now.vectors[new_task].vector for t in tasks},
                            settings, sign=-1.0, seed=seed, fmt=fmt)
        for name, row in rows.items():
            row.update({f"restored_{k}": v for k, v in plus[name].items()})
            row.update({f"subtracted_{k}": v for k, v in minus[name].items()})
    return rows, now


def watch_prompts(world, settings: dict = SETTINGS, fmt: PromptFormat = TINY_FORMAT) -> tuple[list[str], list[str]]:
    """The general-task prompts followed during training, and the task each belongs to."""
    prompts, owners = [], []
    for task in world.general:
        chosen = instructed_set(task, "valid", fmt).prompts[:settings["watch_prompts"]]
        prompts += chosen
        owners += [task.name] * len(chosen)
    return prompts, owners


def overlay(snapshots: list[tuple[int, torch.Tensor]], owners: list[str], start: StageVectors,
            new_vector: torch.Tensor) -> list[dict]:
    """Per snapshot and layer: mean projection on each prompt's own original vector (``old``)
    and on the new task's vector (``new``)."""
    own = torch.stack([start.vectors[o].vector for o in owners])
    return [{"step": step, "old": projections(states, own).tolist(), "new": projections(states, new_vector).tolist()}
            for step, states in snapshots]


def run_seed(model, tokenizer, world, seed: int, settings: dict = SETTINGS, log=lambda message: None,
             fmt: PromptFormat = TINY_FORMAT) -> dict:
    """One seed: the sequence, every stage's analysis, and the first stage's overlay.

    ``fmt``: the prompt format of every prompt built, for training and for measuring
    (a chat model's: :meth:`ivedu.profiles.Settings.prompt_format`)."""
    start = extract_vectors(model, tokenizer, list(world.general), settings["k"], settings["n_prompts"], seed,
                            fmt=fmt)
    stages = [{"stage": 0, "task": None,
               "tasks": compare_stage(model, model, tokenizer, list(world.general), start, start, fmt)}]
    prompts, owners = watch_prompts(world, settings, fmt)
    snapshots: list[tuple[int, torch.Tensor]] = []
    current = model
    for t, name in enumerate(settings["sequence"]):
        watch = watch_training(settings["watch_every"],
                               lambda step, m: snapshots.append((step, residual_states(m, tokenizer, prompts))))
        result = finetune(current, tokenizer, world.task(name), seed=1000 * seed + t,
                          loss_fn=watch if t == 0 else None, fmt=fmt, **training(settings))
        current = result.model.merge_and_unload() if settings["method"] == "lora" else result.model
        rows, now = analyse_stage(model, current, tokenizer, world, start, name, seed, settings, fmt=fmt)
        stage = {"stage": t + 1, "task": name, "steps": result.steps, "tasks": rows}
        if t == 0:
            snapshots.append((result.steps, residual_states(current, tokenizer, prompts)))
            stage["overlay"] = overlay(snapshots, owners, start, now.vectors[name].vector)
        stages.append(stage)
        log(f"seed {seed} stage {t + 1} ({name}, {result.steps} steps): IF {stage_mean(stage, 'if_exact_match'):.2f}, "
            f"restored {stage_mean(stage, 'restored_exact_match'):.2f}")
    return {"seed": seed, "stages": stages, "r2": fit_r2(stages[1:])}


def stage_mean(stage: dict, field: str) -> float:
    """Mean of one per-task field over the general tasks of a stage."""
    return statistics.mean(row[field] for row in stage["tasks"].values())


def fit_r2(stages: list[dict]) -> dict:
    """R² of instruction following (exact match) on each similarity, over tasks x fine-tuned stages."""
    rows = [row for stage in stages for row in stage["tasks"].values()]
    y = [row["if_exact_match"] for row in rows]
    return {"r2_iv": r_squared([r["iv_cosine"] for r in rows], y),
            "r2_hidden": r_squared([r["hidden_cosine"] for r in rows], y),
            "r2_params": r_squared([r["param_distance"] for r in rows], y)}


def summarise(per_seed: list[dict], settings: dict = SETTINGS) -> dict:
    """Means over seeds of the first stage, the final stage and the R² values."""
    summary: dict = {}
    for suffix, index in (("", 1), ("_final", -1)):
        for key, field in (("if_finetuned", "if_exact_match"), ("if_restored", "restored_exact_match"),
                           ("if_subtracted", "subtracted_exact_match"),
                           ("if_random", "restored_random_exact_match"), ("iv_cosine", "iv_cosine"),
                           ("heads_jaccard", "heads_jaccard"), ("hidden_cosine", "hidden_cosine")):
            summary[key + suffix] = statistics.mean(stage_mean(r["stages"][index], field) for r in per_seed)
    summary["if_original"] = statistics.mean(stage_mean(r["stages"][0], "if_exact_match") for r in per_seed)
    for suffix in ("", "_final"):
        lost = summary["if_original"] - summary["if_finetuned" + suffix]
        gained = summary["if_restored" + suffix] - summary["if_finetuned" + suffix]
        summary["restored_share" + suffix] = gained / lost if lost > 0 else float("nan")
    layer = settings["overlay_layer"]
    for key in ("old", "new"):
        summary[f"overlay_{key}_start"] = statistics.mean(r["stages"][1]["overlay"][0][key][layer] for r in per_seed)
        summary[f"overlay_{key}_end"] = statistics.mean(r["stages"][1]["overlay"][-1][key][layer] for r in per_seed)
    for key in ("r2_iv", "r2_hidden", "r2_params"):
        summary[key] = statistics.mean(r["r2"][key] for r in per_seed)
    summary["per_seed"] = [{"seed": r["seed"], **r["r2"],
                            "if_finetuned": stage_mean(r["stages"][1], "if_exact_match"),
                            "if_restored": stage_mean(r["stages"][1], "restored_exact_match")} for r in per_seed]
    return summary


def run(seeds: list[int], settings: dict = SETTINGS, progress: bool | None = None) -> dict:
    """The whole experiment over ``seeds``: a JSON-ready dict with ``summary``, ``per_seed``, ``config``."""
    progress = sys.stderr.isatty() if progress is None else progress
    model, tokenizer = load_model(settings["model"])
    world = build_world(settings["world_seed"])
    began = time.perf_counter()

    def log(message: str) -> None:
        if progress:
            print(f"[{time.perf_counter() - began:6.1f} s] {message}", file=sys.stderr, flush=True)

    per_seed = [run_seed(model, tokenizer, world, seed, settings, log) for seed in seeds]
    return {"summary": summarise(per_seed, settings), "per_seed": per_seed,
            "config": {**settings, "seeds": list(seeds), "training": training(settings)}}
