"""Chapter 4's reproduction: ``python -m ivedu.experiments guided --seeds 3 --json``.

On the shipped tiny model, for each seed, every method of :data:`METHOD_NAMES` is trained
on chapter 1's sequence of three new tasks (``first_french -> last_french -> middle``) and
scored: the general tasks zero-shot (GP) and with 4 demonstrations (IP) after the last stage,
and the sequence's own tasks after every stage (the ``R`` matrix: AP, FP, forgetting, BWT).
On the first seed, the ablation drops each term of the guided loss in turn.

The settings (:data:`SETTINGS`) and why:

- **the same stop rule for every method**, chapter 1's: train until the new task reaches
  exact match 0.9 on its valid split (checked every 25 steps; at most 300 steps per task),
  constant rate after 10 warm-up steps, batch 16, chapter 1's learning rates. A fixed step
  count was tried first and rejected: LoRA at this rate learns ``last_french`` abruptly
  somewhere between 75 and 200 steps depending on the seed, and a learnt task can be
  unlearnt again a few dozen steps later, so any fixed count leaves some runs with a task
  half-learnt and AP measures luck. The stop rule compares methods at equal plasticity
  (each new task learnt), which is the comparison the criterion asks for; a method that
  learns more slowly trains longer, and pays for it in forgetting if it does;
- **the progressive intervention** fades the student's vector from 1 to 0 over the first
  100 steps (about what plain LoRA needs per task); a stage that stops earlier ends with
  part of the vector still on during training, but is always checked and scored without it;
- **the vectors** are each new task's instruction vector from the *original* model (as in the
  authors' code), top 2 heads, instructed clean prompts and instruction-removed corrupted
  prompts (chapter 2's choices); they are added at layer 0's attention output;
- **the guided weights**: the code's beta = 1 and T = 2, with alpha1 = 1 and alpha2 = 0.1
  chosen on the *valid* splits by :func:`select_weights` (seed 0): among alpha1 in {0, 1} x
  alpha2 in {0.1, 0.3, 1}, the highest valid GP whose valid AP stays within 0.05 of plain
  LoRA's. Measured (valid, seed 0): plain LoRA GP 0.22 / AP 0.97; (1, 0.1) 0.46 / 0.93,
  chosen; (0, 0.3) 0.34 / 0.97; the others learn the new tasks too slowly ((0, 0.1) AP 0.90,
  (1, 0.3) 0.91, (0, 1) 0.86, (1, 1) 0.59). The code's alpha1 = 20 stops the tiny model from
  learning the new tasks at all (valid AP about 0.3): the teacher cannot do a new task, so the
  answer-start KL fights the cross-entropy head-on. ``kl`` and ``random_vector`` use the same
  weights: they are the guided loss without a vector and with a random one of equal norm.
- no method sees the general tasks' data; replay keeps 8 examples of each finished new task.
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import replace

from ivedu.continual import Method, MethodRun, general_scores, run_method
from ivedu.experiments.diagnosis import _log, general_tasks
from ivedu.extraction import corrupted_prompts
from ivedu.guided import TERMS, GuidedSettings, new_task_vector
from ivedu.intervention import steered_first_token_accuracy
from ivedu.models import load_model
from ivedu.prompts import TINY_FORMAT, PromptFormat
from ivedu.world import build_world

GUIDED = GuidedSettings(kl_start=1.0, kl_all=0.1, head_mse=1.0, progressive=True, temperature=2.0,
                        layer=0, site="attention", scale=1.0, progressive_steps=100)

SETTINGS: dict = {
    "model": "tiny",
    "world_seed": 0,
    "sequence": ["first_french", "last_french", "middle"],
    "general": None,  # names of the general tasks scored for GP and IP; None: all ten
    "split": "test",
    "k": 4,
    "steps": 300,
    "stop_at": 0.9,
    "eval_every": 25,
    "batch_size": 16,
    "schedule": "constant",
    "warmup_steps": 10,
    "vector_heads": 2,
    "vector_prompts": 48,
    "guided": GUIDED,
    "ablation_seeds": 1,  # the ablation runs on this many of the seeds (the first ones)
}

METHOD_NAMES = ("plain_lora", "plain_full", "kl", "replay", "ewc", "iv_guided", "random_vector")


def methods(settings: dict = SETTINGS) -> dict[str, Method]:
    """Every method of the comparison, by name."""
    g = settings["guided"]
    return {
        "plain_lora": Method("plain_lora", "plain", "lora"),
        "plain_full": Method("plain_full", "plain", "full"),
        "kl": Method("kl", "kl", "lora", guided=g),
        "replay": Method("replay", "replay", "lora"),
        "ewc": Method("ewc", "ewc", "lora"),
        "iv_guided": Method("iv_guided", "guided", "lora", guided=g),
        "random_vector": Method("random_vector", "random_vector", "lora", guided=g),
        "iv_guided_full": Method("iv_guided_full", "guided", "full", guided=g),
    }


def ablation_methods(settings: dict = SETTINGS) -> dict[str, Method]:
    """The guided method with each term of the loss dropped in turn: ``"iv_guided - <term>"``."""
    g = settings["guided"]
    return {f"iv_guided - {term}": Method(f"iv_guided - {term}", "guided", "lora", guided=g.without(term))
            for term in TERMS}


def extract_vectors(model, tokenizer, tasks, settings: dict = SETTINGS, seed: int = 0, fmt: PromptFormat = TINY_FORMAT):
    """Each new task's vector from the original model, and what it does: ``(vectors, report)``.

    The report gives, per task, the vector's norm and heads, P(correct first token) with and
    without the instruction, and the first-token accuracy on valid prompts *without* the
    instruction, bare and with the vector -- whether the vector carries the new task at all.
    """
    vectors, report = {}, {}
    g: GuidedSettings = settings["guided"]
    for task in tasks:
        iv, scan = new_task_vector(model, tokenizer, task, settings["vector_heads"], settings["vector_prompts"], seed,
                                   fmt)
        bare = corrupted_prompts(task, "valid", "removed", n=None, seed=seed, fmt=fmt)
        vectors[task.name] = iv
        report[task.name] = {
            "heads": [list(h) for h in iv.heads], "norm": iv.norm,
            "clean_prob": scan.clean_prob, "corrupted_prob": scan.corrupted_prob,
            "max_effect": float(scan.effects.max()),
            "bare_accuracy": steered_first_token_accuracy(model, tokenizer, bare.prompts, bare.answers, None,
                                                          g.layer, g.scale, g.site),
            "with_vector_accuracy": steered_first_token_accuracy(model, tokenizer, bare.prompts, bare.answers,
                                                                 iv.vector, g.layer, g.scale, g.site),
        }
    return vectors, report


def train_and_score(model, tokenizer, world, method: Method, seed: int, vectors, settings: dict = SETTINGS,
                    fmt: PromptFormat = TINY_FORMAT) -> MethodRun:
    """One method on the sequence with the experiment's training settings (prompts in ``fmt``)."""
    return run_method(model, tokenizer, [world.task(n) for n in settings["sequence"]], general_tasks(world, settings),
                      method, seed,
                      steps=settings["steps"], batch_size=settings["batch_size"], vectors=vectors,
                      split=settings["split"], k=settings["k"], schedule=settings["schedule"],
                      warmup_steps=settings["warmup_steps"], stop_at=settings["stop_at"],
                      eval_every=settings["eval_every"], fmt=fmt)


def row(run: MethodRun) -> dict:
    """The numbers one run contributes to the summary (``steps``: training steps, all stages)."""
    return {"gp": run.gp, "ip": run.ip, "ap": run.metrics["AP"], "fp": run.metrics["FP"],
            "forgetting": run.metrics["forgetting"], "bwt": run.metrics["BWT_gem"], "steps": sum(run.steps)}


def summarise(rows: list[dict]) -> dict:
    """Mean and standard deviation over seeds of each number of :func:`row`."""
    out = {}
    for key in rows[0]:
        values = [r[key] for r in rows]
        out[key] = statistics.mean(values)
        out[key + "_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    out["n_seeds"] = len(rows)
    return out


def run(seeds: list[int], settings: dict = SETTINGS, names: tuple[str, ...] = METHOD_NAMES,
        ablation: bool = True, progress: bool | None = None) -> dict:
    """The whole experiment: a JSON-ready dict with ``summary``, ``ablation``, ``per_seed``, ``config``.

    ``summary[method]``: ``gp``, ``ip``, ``ap``, ``fp``, ``forgetting``, ``bwt`` (means over
    seeds; exact match in [0, 1]; BWT in GEM's convention; ``steps``: training steps over the
    sequence) and each one's ``*_std``. ``before``: GP and IP of the model before any
    training. ``vectors``: per seed and task, what the new task's vector does. ``ablation``: the
    same for each dropped term, on the first ``settings["ablation_seeds"]`` seeds, with
    ``iv_guided`` on those seeds alongside. ``criterion``: the issue's done-when test.
    """
    progress = sys.stderr.isatty() if progress is None else progress
    model, tokenizer = load_model(settings["model"])
    world = build_world(settings["world_seed"])
    tasks = [world.task(n) for n in settings["sequence"]]
    start = time.perf_counter()
    gen_if, gen_icl = general_scores(model, tokenizer, general_tasks(world, settings), settings["split"], settings["k"])
    before = {"gp": statistics.mean(gen_if.values()),
              "ip": statistics.mean(gen_icl.values()) if gen_icl else float("nan")}
    all_methods = methods(settings)
    per_seed, vector_reports, rows = [], {}, {n: [] for n in names}
    ablation_rows: dict[str, list[dict]] = {}
    for i, seed in enumerate(seeds):
        vectors, vector_reports[seed] = extract_vectors(model, tokenizer, tasks, settings, seed)
        todo = {n: all_methods[n] for n in names}
        if ablation and i < settings["ablation_seeds"]:
            todo.update(ablation_methods(settings))
        for name, method in todo.items():
            result = train_and_score(model, tokenizer, world, method, seed, vectors, settings)
            per_seed.append(result.as_dict())
            (rows if name in rows else ablation_rows).setdefault(name, []).append(row(result))
            _log(progress, start, f"seed {seed} {name}: GP {result.gp:.2f} IP {result.ip:.2f} "
                                  f"AP {result.metrics['AP']:.2f} ({result.seconds:.0f} s)")
    summary = {name: summarise(r) for name, r in rows.items()}
    ablation_summary = {name: summarise(r) for name, r in ablation_rows.items()}
    if ablation_summary and "iv_guided" in rows:
        ablation_summary["iv_guided"] = summarise(rows["iv_guided"][:settings["ablation_seeds"]])
    return {"summary": summary, "before": before, "ablation": ablation_summary, "criterion": criterion(summary),
            "vectors": vector_reports, "per_seed": per_seed, "general_before": {"if": gen_if, "icl": gen_icl},
            "config": {**{k: v for k, v in settings.items() if k != "guided"},
                       "guided": settings["guided"].as_dict(), "seeds": list(seeds)}}


def criterion(summary: dict) -> dict:
    """The issue's done-when test: iv_guided beats plain_lora on GP by >= 0.15 with AP at most
    0.05 lower, and beats random_vector on GP. Measured, with the margins."""
    if not all(n in summary for n in ("iv_guided", "plain_lora", "random_vector")):
        return {}
    g, p, r = summary["iv_guided"], summary["plain_lora"], summary["random_vector"]
    out = {"gp_gain_over_plain_lora": g["gp"] - p["gp"], "ap_change_vs_plain_lora": g["ap"] - p["ap"],
           "fp_change_vs_plain_lora": g["fp"] - p["fp"], "gp_gain_over_random_vector": g["gp"] - r["gp"]}
    out["met"] = (out["gp_gain_over_plain_lora"] >= 0.15 and out["ap_change_vs_plain_lora"] >= -0.05
                  and out["gp_gain_over_random_vector"] > 0)
    return out


def format_summary(summary: dict, names=None, before: dict | None = None) -> str:
    """A plain-text table: GP, IP, AP, FP, forgetting and BWT per method, mean ± std over seeds
    (``before``: GP and IP before training, as :func:`run` returns them, for a first row)."""
    names = list(summary) if names is None else names
    keys = ("gp", "ip", "ap", "fp", "forgetting", "bwt")
    lines = [f"{'method':<24}" + "".join(f"{k.upper():>14}" for k in keys)]
    if before:
        lines.append(f"{'(before training)':<24}" + "".join(
            f"{before[k]:>14.2f}" if k in before else f"{'':>14}" for k in keys))
    for n in names:
        s = summary[n]
        lines.append(f"{n:<24}" + "".join(f"{s[k]:>8.2f} ± {s[k + '_std']:.2f}" for k in keys))
    return "\n".join(lines)


def with_guided(settings: dict = SETTINGS, **changes) -> dict:
    """A copy of ``settings`` whose guided loss has ``changes`` (e.g. ``kl_start=5``)."""
    return {**settings, "guided": replace(settings["guided"], **changes)}


def select_weights(seed: int = 0, grid=((0.0, 0.1), (0.0, 0.3), (0.0, 1.0), (1.0, 0.1), (1.0, 0.3), (1.0, 1.0)),
                   max_ap_drop: float = 0.05, settings: dict = SETTINGS) -> dict:
    """Choose ``(kl_start, kl_all)`` of the guided loss on the *valid* splits, never on test.

    Trains plain LoRA and the guided method with each pair of ``grid`` on ``seed``, scoring
    the new tasks and the general tasks on their valid splits (zero-shot only). Returns every
    pair's valid GP and AP and ``chosen``: the pair with the highest valid GP among those
    whose valid AP is at most ``max_ap_drop`` below plain LoRA's (``None`` if none is).
    """
    model, tokenizer = load_model(settings["model"])
    world = build_world(settings["world_seed"])
    valid = {**settings, "split": "valid", "k": 0}
    vectors, _ = extract_vectors(model, tokenizer, [world.task(n) for n in valid["sequence"]], valid, seed)
    plain = train_and_score(model, tokenizer, world, methods(valid)["plain_lora"], seed, vectors, valid)
    scores = {"plain_lora": {"gp": plain.gp, "ap": plain.metrics["AP"]}}
    for kl_start, kl_all in grid:
        g = replace(valid["guided"], kl_start=kl_start, kl_all=kl_all)
        run_ = train_and_score(model, tokenizer, world, Method("iv_guided", "guided", "lora", guided=g), seed,
                               vectors, valid)
        scores[f"{kl_start},{kl_all}"] = {"gp": run_.gp, "ap": run_.metrics["AP"]}
    feasible = [k for k, v in scores.items() if k != "plain_lora"
                and v["ap"] >= scores["plain_lora"]["ap"] - max_ap_drop]
    chosen = max(feasible, key=lambda k: scores[k]["gp"]) if feasible else None
    return {"scores": scores, "chosen": chosen}
