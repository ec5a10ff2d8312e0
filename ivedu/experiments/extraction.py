"""Chapter 2's reproduction: ``python -m ivedu.experiments extraction --profile tiny --seeds 3 --json``.

Per seed: scan every general task's heads (instructed clean prompts, instruction-removed
corrupted prompts, train split), build each task's instruction vector, choose the number of
heads, the layer and the scale on the valid split, and report first-token accuracy and exact
match on the test split's instruction-less prompts (:func:`ivedu.extraction.extract_and_test`).
The seed draws the extraction prompts and the random control vectors; the model is the same.
Claim 2 is judged against its shortcuts: the constant answer and a random vector, by exact
match, with bootstrap intervals (:func:`ivedu.extraction.claim2_summary`).
"""

from __future__ import annotations

import statistics

from ivedu.extraction import Extraction, claim2_summary, controls_row, extract_and_test
from ivedu.settings import Settings
from ivedu.study import ModelUnderStudy, general_tasks, load_study, load_tasks
from ivedu.experiments.log import Log

FIELDS = ("clean", "corrupted", "with_iv", "with_random", "with_other_task")
KEYS = FIELDS + tuple(f + "_em" for f in FIELDS)


def reads(settings: Settings) -> tuple[str, ...]:
    """Chapter 2's scan and intervention settings."""
    return ("extraction",)


def row(result: Extraction, seed: int) -> dict:
    """One seed's means over the general tasks, the chosen setting (and its random-vector cost,
    the scale rule's measure), per-task scores and shortcut controls."""
    out = {key: result.mean(key) for key in KEYS}
    out.update(seed=seed, k=result.k, best_layer=result.layer, scale=result.scale,
               random_cost=result.chosen_random_cost, constant_em=result.mean("constant_em"),
               heads={name: v.heads for name, v in result.vectors.items()},
               per_task={s.task: {**{f: getattr(s, f) for f in FIELDS}, **controls_row(s)} for s in result.scores})
    return out


def run_seed(lm: ModelUnderStudy, tasks, seed: int, settings: Settings) -> dict:
    """:func:`row` of one seed's extraction on ``tasks``."""
    return row(extract_and_test(lm, tasks, seed, settings.extraction), seed)


def run(settings: Settings, seeds: list[int], progress: bool = False) -> dict:
    """``summary``: means over seeds of :data:`KEYS`, ``gain`` (with the vector minus bare),
    ``random_minus_corrupted``, the most chosen layer and ``claim2`` (the effect over the
    strongest shortcut, with its interval: :func:`ivedu.extraction.claim2_summary`);
    ``per_seed``: :func:`row` per seed."""
    log = Log(progress)
    lm = load_study(settings)
    tasks = general_tasks(settings, load_tasks(settings, lm))
    results, per_seed = [], []
    for seed in seeds:
        results.append(extract_and_test(lm, tasks, seed, settings.extraction))
        per_seed.append(row(results[-1], seed))
        log(f"seed {seed}: bare {per_seed[-1]['corrupted']:.2f} -> with the vector {per_seed[-1]['with_iv']:.2f}")
    summary: dict = {key: statistics.mean(r[key] for r in per_seed) for key in KEYS}
    summary["per_seed"] = [{key: r[key] for key in KEYS} for r in per_seed]
    summary["best_layer"] = statistics.mode(r["best_layer"] for r in per_seed)
    summary["gain"] = summary["with_iv"] - summary["corrupted"]
    summary["random_minus_corrupted"] = summary["with_random"] - summary["corrupted"]
    summary["claim2"] = claim2_summary(results)
    return {"summary": summary, "per_seed": per_seed, "model": settings.model}
