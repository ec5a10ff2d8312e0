"""Benchmark: greedy exact match from one teacher-forced pass, against decoding every prompt.

Chapter 1's scores of instruction following (:func:`ivedu.evaluation.score_abilities`) take, per
prompt set, greedy answers, the first token and the gold answer's probability. The old way runs
three computations: greedy decoding of every prompt, a pass for the first token, a teacher-forced
pass over prompt + gold for the probability (``_generation_score_by_decoding``). The new way
(``_generation_score``) reads all three from the teacher-forced pass wherever that provably equals
greedy decoding (:func:`ivedu.generation.forced_greedy`) and decodes only the other prompts. The
exact-match-only score (the stop rule's, ``exact_match_score``) is timed the same way.

Both run on the study's general tasks on ``split``, zero-shot (every instruction phrasing) and
with ``k`` demonstrations, as chapter 1 scores them: the tiny profile by default, ``--smol``
SmolLM2-135M-Instruct with its chat prompts. Prints time ratios (old / new), whether every score
and answer is equal, the share of prompts the pass decides, and the largest difference between
a logit of the teacher-forced pass and the same logit from the prompt's own pass, beside the
margin the pass requires (:func:`ivedu.generation.decided_margin`):

    python benchmarks/exact_match.py --json
    python benchmarks/exact_match.py --smol --max-prompts 64 --json
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from ivedu.evaluation import (_decoded_answers, _generation_score, _generation_score_by_decoding, _max_new_tokens,
                              demonstrations, exact_match, greedy_answers, instructed_prompts)
from ivedu.generation import decided_margin, encode_batch, forced_greedy, last_token_logits, model_device, prompt_ids
from ivedu.prompts import answer_ids, fewshot_prompt
from ivedu.settings import settings
from ivedu.study import general_tasks, load_study, load_tasks


def timed(run) -> tuple[object, float]:
    start = time.perf_counter()
    out = run()
    return out, time.perf_counter() - start


def prompt_sets(lm, tasks, split: str, k: int) -> list[tuple[str, list[str], list[str]]]:
    """``(name, prompts, golds)``: each task zero-shot under every phrasing, then with ``k`` demonstrations."""
    sets = []
    for task in tasks:
        sets.append((f"{task.name}/zero-shot", *instructed_prompts(task, split, fmt=lm.fmt)))
        examples = task.split(split)
        if k:
            sets.append((f"{task.name}/{k}-shot", [fewshot_prompt(demonstrations(task, ex, k), ex.input, lm.fmt)
                                                   for ex in examples], [ex.output for ex in examples]))
    return sets


@torch.no_grad()
def logit_gap(lm, prompts: list[str], golds: list[str]) -> float:
    """The largest difference between the logits after each prompt in the teacher-forced pass over
    prompt + gold and in the prompt's own pass (other widths, other padding): [1 batch of 64]."""
    prompts, golds = prompts[:64], golds[:64]
    ids = prompt_ids(lm.tokenizer, prompts)
    answers = [answer_ids(lm.tokenizer, p, g) for p, g in zip(prompts, golds)]
    batch = encode_batch(lm.tokenizer, [p + a for p, a in zip(ids, answers)], model_device(lm.model))
    logits = lm.model(**batch).logits
    width = logits.shape[1]
    forced = torch.stack([logits[i, width - len(a) - 1] for i, a in enumerate(answers)]).float().cpu()
    return float((forced - last_token_logits(lm.model, lm.tokenizer, prompts)).abs().max())


def compare(profile: str, max_prompts: int | None = None) -> dict:
    s = settings("ch1", profile)
    lm = load_study(s)
    tasks = general_tasks(s, load_tasks(s, lm))
    sets = [(name, prompts[:max_prompts], golds[:max_prompts])
            for name, prompts, golds in prompt_sets(lm, tasks, s.data.split, s.data.k_shots)]
    old_s = new_s = em_old_s = em_new_s = 0.0
    equal, decided, total, gap = True, 0, 0, 0.0
    for name, prompts, golds in sets:
        old, t_old = timed(lambda: _generation_score_by_decoding(lm, name, prompts, golds))
        new, t_new = timed(lambda: _generation_score(lm, name, prompts, golds))
        old_s, new_s, equal = old_s + t_old, new_s + t_new, equal and old == new
        if name.endswith("zero-shot"):  # the stop rule's score: exact match alone
            em_old, t = timed(lambda: exact_match(_decoded_answers(lm, prompts, golds), golds))
            em_old_s += t
            em_new, t = timed(lambda: exact_match(greedy_answers(lm, prompts, golds), golds))
            em_new_s, equal = em_new_s + t, equal and em_old == em_new
        pass_ = forced_greedy(lm.model, lm.tokenizer, prompts, golds, _max_new_tokens(lm, prompts, golds),
                              stop=lm.fmt.stop)
        decided += sum(a is not None for a in pass_.answers)
        total += len(prompts)
        gap = max(gap, logit_gap(lm, prompts, golds))
    return {"tasks": len(tasks), "prompt_sets": len(sets), "prompts": total,
            "scores": {"decoding_s": round(old_s, 2), "one_pass_s": round(new_s, 2),
                       "speedup": round(old_s / new_s, 2)},
            "exact_match_only": {"decoding_s": round(em_old_s, 2), "one_pass_s": round(em_new_s, 2),
                                 "speedup": round(em_old_s / em_new_s, 2)},
            "equal": equal, "decided_share": round(decided / total, 3),
            "largest_logit_difference": gap, "margin": decided_margin(next(lm.model.parameters()).dtype)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--smol", action="store_true", help="SmolLM2-135M-Instruct (the smol profile) instead of tiny")
    parser.add_argument("--max-prompts", type=int, default=None, help="at most this many prompts per set (default: all)")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    profile = "smol" if args.smol else "tiny"
    summary = {"torch_threads": torch.get_num_threads(), "profile": profile, "max_prompts": args.max_prompts,
               **compare(profile, args.max_prompts)}
    print(json.dumps(summary) if args.json else json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
