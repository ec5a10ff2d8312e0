"""Benchmark: a sweep of steerings, one whole pass per steering vs one cached prefix for all.

A vector added at the last prompt token leaves every earlier position unchanged, so the
prompts' positions before the last can run once and each (vector, layer, scale) cell costs one
token (:func:`ivedu.intervention.steered_first_token_hits_each`) plus, for greedy answers, its
own generated tokens (:func:`ivedu.intervention.steered_answers_each`). Both ways run the same
cells (random vectors at every layer, two scales, and no vector) on the same instruction-less
prompts, on the shipped tiny model and (``--smol``) on SmolLM2-135M-Instruct with its chat
prompts. Prints time ratios and whether the two ways agree exactly, not absolute claims:

    python benchmarks/steering_sweep.py --json
    python benchmarks/steering_sweep.py --smol --json
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import ivedu
from ivedu.architectures import model_layout
from ivedu.datasets import load_task
from ivedu.extraction import corrupted_prompts
from ivedu.intervention import (Steering, random_vector_like, steered_answers, steered_answers_each,
                                steered_first_token_hits, steered_first_token_hits_each)
from ivedu.prompts import TINY_FORMAT, chat_format
from ivedu.study import ModelUnderStudy


def cells(model, layers: int) -> list:
    """No vector, then a random vector of the residual width at ``layers`` evenly spaced layers x 2 scales
    (at the attention output): ``(vector, Steering)`` pairs."""
    layout = model_layout(model)
    vector = random_vector_like(torch.ones(layout.hidden_size), seed=0) * 4
    chosen = sorted({round(i * (layout.n_layers - 1) / max(layers - 1, 1)) for i in range(layers)})
    return [(None, None)] + [(vector, Steering(layer, scale, "attention")) for layer in chosen for scale in (1.0, 2.0)]


def timed(run) -> tuple[object, float]:
    start = time.perf_counter()
    out = run()
    return out, time.perf_counter() - start


def compare(lm: ModelUnderStudy, task, n_prompts: int, layers: int) -> dict:
    """Both ways over the same cells on ``n_prompts`` instruction-less prompts of ``task`` (in ``lm.fmt``)."""
    bare = corrupted_prompts(task, "train", n=n_prompts, fmt=lm.fmt)
    steers = cells(lm.model, layers)
    args = (lm, bare.prompts, bare.answers)
    each_hits, each_hits_s = timed(lambda: steered_first_token_hits_each(*args, steers))
    one_hits, one_hits_s = timed(lambda: [steered_first_token_hits(*args, *steer) for steer in steers])
    each_answers, each_answers_s = timed(lambda: steered_answers_each(*args, steers))
    one_answers, one_answers_s = timed(lambda: [steered_answers(*args, *steer) for steer in steers])
    return {"prompts": len(bare.prompts), "cells": len(steers),
            "first_token": {"per_cell_s": round(one_hits_s, 2), "one_prefix_s": round(each_hits_s, 2),
                            "speedup": round(one_hits_s / each_hits_s, 1), "equal": each_hits == one_hits},
            "greedy": {"per_cell_s": round(one_answers_s, 2), "one_prefix_s": round(each_answers_s, 2),
                       "speedup": round(one_answers_s / each_answers_s, 1), "equal": each_answers == one_answers}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--prompts", type=int, default=48, help="prompts per model")
    parser.add_argument("--smol", action="store_true", help="also SmolLM2-135M-Instruct with its chat prompts")
    args = parser.parse_args()
    model, tokenizer = ivedu.load_model("tiny")
    tiny = ModelUnderStudy(model, tokenizer, TINY_FORMAT, "tiny")
    results = {"tiny": compare(tiny, ivedu.build_world(0).task("plural"), args.prompts, layers=4)}
    if args.smol:
        smol, smol_tokenizer = ivedu.load_model("smol", device="cpu")
        results["smollm2"] = compare(ModelUnderStudy(smol, smol_tokenizer, chat_format(smol_tokenizer), "smol"),
                                     load_task("singular-plural"), args.prompts, layers=3)
    summary = {"torch_threads": torch.get_num_threads(), "models": results}
    print(json.dumps(summary) if args.json else json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
