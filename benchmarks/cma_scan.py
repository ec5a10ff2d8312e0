"""Benchmark: the causal-mediation scan, straightforward vs ivedu's.

The straightforward scan is the reference code's: one full forward pass per prompt and
head, batch size 1. ivedu's patches many heads per pass and reuses the prompt prefix's
cached keys and values, recomputing only the last position. Both run on the same
instruction-removed prompts with the same clean means, on the shipped tiny model, on a
12-layer, 12-head randomly initialised Llama, and (``--smol``) on the real SmolLM2-135M-Instruct
(30 layers x 9 heads) with its chat-template prompts for the plural task. Prints time ratios,
not absolute claims:

    python benchmarks/cma_scan.py --json
    python benchmarks/cma_scan.py --smol --json
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

import ivedu
from ivedu.datasets import load_task
from ivedu.extraction import clean_prompts, corrupted_prompts
from ivedu.mediation import indirect_effects, indirect_effects_reference, mean_head_activations
from ivedu.prompts import TINY_FORMAT, chat_format
from ivedu.study import ModelUnderStudy


def random_llama(vocab_size: int, layers: int = 12, heads: int = 12, hidden: int = 768) -> LlamaForCausalLM:
    """A randomly initialised Llama of GPT-2-small proportions (no download needed)."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=4 * hidden,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=256, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return LlamaForCausalLM(config).eval()


def compare(lm: ModelUnderStudy, task, n_prompts: int) -> dict:
    """Time both scans on ``n_prompts`` corrupted prompts of ``task`` (in ``lm.fmt``); their largest difference."""
    model, tokenizer = lm.model, lm.tokenizer
    clean = clean_prompts(task, n=n_prompts, fmt=lm.fmt)
    corrupted = corrupted_prompts(task, n=n_prompts, fmt=lm.fmt)
    means = mean_head_activations(model, tokenizer, clean.prompts)
    start = time.perf_counter()
    reference = indirect_effects_reference(model, tokenizer, corrupted.prompts, corrupted.answers, means)
    reference_s = time.perf_counter() - start
    start = time.perf_counter()
    fast = indirect_effects(model, tokenizer, corrupted.prompts, corrupted.answers, means)
    fast_s = time.perf_counter() - start
    return {"prompts": n_prompts, "reference_s": round(reference_s, 3), "ivedu_s": round(fast_s, 3),
            "speedup": round(reference_s / fast_s, 1), "max_abs_diff": float((reference - fast).abs().max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--prompts", type=int, default=16, help="prompts per model")
    parser.add_argument("--smol", action="store_true",
                        help="also SmolLM2-135M-Instruct with its chat prompts (the reference takes minutes)")
    parser.add_argument("--smol-prompts", type=int, default=4, help="prompts for SmolLM2")
    args = parser.parse_args()
    model, tokenizer = ivedu.load_model("tiny")
    task = ivedu.build_world(0).task("capital")
    random_model = ModelUnderStudy(random_llama(len(tokenizer)), tokenizer, TINY_FORMAT)
    results = {"tiny_4x4": compare(ModelUnderStudy(model, tokenizer, TINY_FORMAT), task, args.prompts),
               "llama_12x12_random": compare(random_model, task, args.prompts)}
    if args.smol:
        smol, smol_tokenizer = ivedu.load_model("smol", device="cpu")
        results["smollm2_30x9"] = compare(ModelUnderStudy(smol, smol_tokenizer, chat_format(smol_tokenizer)),
                                          load_task("singular-plural"), args.smol_prompts)
    summary = {"speedup": min(r["speedup"] for r in results.values()),
               "max_abs_diff": max(r["max_abs_diff"] for r in results.values()),
               "torch_threads": torch.get_num_threads(), "models": results}
    print(json.dumps(summary) if args.json else json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
