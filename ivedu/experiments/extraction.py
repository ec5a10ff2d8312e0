"""Chapter 2's reproduction: ``python -m ivedu.experiments extraction --seeds 3 --json``.

Per seed, on the shipped tiny model: scan every general task's heads (instructed clean
prompts, instruction-removed corrupted prompts, train split), build each task's instruction
vector, choose the number of heads, the layer and the scale on the valid split, and report
first-token accuracy and exact match on the test split's instruction-less prompts. The seed
draws the extraction prompts and the random control vectors; the model is the same.
"""

from __future__ import annotations

import statistics

from ivedu.extraction import ExtractionSettings, extract_and_test
from ivedu.models import load_model
from ivedu.world import build_world

FIELDS = ("clean", "corrupted", "with_iv", "with_random", "with_other_task")


def run_seed(model, tokenizer, world, seed: int, settings: ExtractionSettings = ExtractionSettings()) -> dict:
    """One seed's means over the general tasks, the chosen setting and per-task scores."""
    result = extract_and_test(model, tokenizer, world.general, seed, settings)
    row = {f: result.mean(f) for f in FIELDS}
    row.update({f + "_em": result.mean(f + "_em") for f in FIELDS})
    row.update(seed=seed, k=result.k, best_layer=result.layer, scale=result.scale,
               heads={name: v.heads for name, v in result.vectors.items()},
               per_task={s.task: {f: getattr(s, f) for f in FIELDS} for s in result.scores})
    return row


def run(seeds: list[int]) -> dict:
    model, tokenizer = load_model("tiny")
    world = build_world(0)
    per_seed = [run_seed(model, tokenizer, world, seed) for seed in seeds]
    keys = [f for f in FIELDS] + [f + "_em" for f in FIELDS]
    summary = {key: statistics.mean(r[key] for r in per_seed) for key in keys}
    summary["per_seed"] = [{key: r[key] for key in keys} for r in per_seed]
    summary["best_layer"] = statistics.mode(r["best_layer"] for r in per_seed)
    summary["gain"] = summary["with_iv"] - summary["corrupted"]
    summary["random_minus_corrupted"] = summary["with_random"] - summary["corrupted"]
    return {"summary": summary, "per_seed": per_seed, "model": "tiny",
            "settings": ExtractionSettings().__dict__}
