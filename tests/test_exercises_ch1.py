"""Chapter 1's checkers reject planted wrong answers: each is a mistake a learner could make.

The reference solutions are the notebook's solution cells; ``test_exercises.py`` checks that
each passes its checker and that each untouched stub fails it.
"""

import numpy as np
import pytest

from ivedu.exercises import ExerciseError
from ivedu.exercises.ch1 import check_backward_transfer, check_instruction_exact_match, check_knowledge_score


def knowledge_under_the_instruction(model, tokenizer, task, split="test"):
    """Wrong: ranks the candidates after the *instruction*, which measures instruction following."""
    from ivedu.generation import answer_logprobs
    from ivedu.prompts import instructed_prompt

    correct = []
    for ex in task.split(split):
        scores = answer_logprobs(model, tokenizer, [instructed_prompt(task, ex.input)] * len(ex.candidates),
                                 list(ex.candidates))
        correct.append(bool((scores[0] > scores[1:]).all()))
    return sum(correct) / len(correct)


def exact_match_first_phrasing_only(model, tokenizer, task, split="test"):
    """Wrong: scores only the first instruction phrasing."""
    from ivedu.evaluation import exact_match
    from ivedu.generation import greedy_generate
    from ivedu.prompts import instructed_prompt

    examples = task.split(split)
    predictions = greedy_generate(model, tokenizer, [instructed_prompt(task, ex.input) for ex in examples],
                                  max_new_tokens=8)
    hits = exact_match(predictions, [ex.output for ex in examples])
    return sum(hits) / len(hits)


def bwt_trace_convention(R):
    """Wrong for this exercise: divides by T (TRACE's convention) instead of T - 1."""
    R = np.asarray(R, dtype=float)
    return float((R[-1] - np.diag(R)).sum() / R.shape[0])


WRONG_ANSWERS = [
    (check_knowledge_score, knowledge_under_the_instruction, "statement"),
    (check_instruction_exact_match, exact_match_first_phrasing_only, "phrasing"),
    (check_backward_transfer, bwt_trace_convention, "T - 1"),
]


@pytest.mark.parametrize("check, wrong, message", WRONG_ANSWERS, ids=[w[1].__name__ for w in WRONG_ANSWERS])
def test_checker_rejects_the_planted_wrong_answer(check, wrong, message):
    with pytest.raises(ExerciseError, match=message):
        check(wrong)
