"""Chapter 1's checkers reject planted wrong answers: each is a mistake a learner could make.

The reference solutions are the notebook's solution cells; ``test_exercises.py`` checks that
each passes its checker and that each untouched stub fails it.
"""

import numpy as np
import pytest
import torch

from exercise_solutions import small, smol_world, solution, stub
from ivedu.exercises import ExerciseError
from ivedu.exercises.ch1 import (abilities_reference, check_abilities, check_backward_transfer,
                                 check_instruction_exact_match, check_knowledge_score)
from ivedu.study import ModelUnderStudy


def knowledge_under_the_instruction(model, tokenizer, task, split="test"):
    """Wrong: ranks the candidates after the *instruction*, which measures instruction following."""
    from ivedu.generation import answer_logprobs
    from ivedu.prompts import TINY_FORMAT, instructed_prompt

    correct = []
    for ex in task.split(split):
        prompts = [instructed_prompt(task, ex.input, 0, TINY_FORMAT)] * len(ex.candidates)
        scores = answer_logprobs(model, tokenizer, prompts, list(ex.candidates))
        correct.append(bool((scores[0] > scores[1:]).all()))
    return sum(correct) / len(correct)


def knowledge_mean_per_token(model, tokenizer, task, split="test"):
    """Wrong: ranks the candidates by their mean log-probability per token (length-normalised), not
    the sum. Every candidate of the tiny world is one word-level token, so only a real tokenizer
    tells the two apart."""
    from ivedu.generation import answer_logprobs
    from ivedu.prompts import answer_ids, statement_prompt

    correct = []
    for ex in task.split(split):
        prompts = [statement_prompt(task, ex.input)] * len(ex.candidates)
        lengths = [len(answer_ids(tokenizer, p, c)) for p, c in zip(prompts, ex.candidates)]
        scores = answer_logprobs(model, tokenizer, prompts, list(ex.candidates)) / torch.tensor(lengths)
        correct.append(bool((scores[0] > scores[1:]).all()))
    return sum(correct) / len(correct)


def exact_match_first_phrasing_only(model, tokenizer, task, split, fmt):
    """Wrong: scores only the first instruction phrasing."""
    from ivedu.evaluation import exact_match
    from ivedu.generation import greedy_generate
    from ivedu.prompts import instructed_prompt

    examples = task.split(split)
    predictions = greedy_generate(model, tokenizer, [instructed_prompt(task, ex.input, 0, fmt) for ex in examples],
                                  max_new_tokens=8, stop=fmt.stop)
    hits = exact_match(predictions, [ex.output for ex in examples])
    return sum(hits) / len(hits)


def exact_match_in_the_plain_format(model, tokenizer, task, split, fmt):
    """Wrong: ignores ``fmt`` and prompts in the tiny model's plain format, which a chat model does not follow."""
    from ivedu.prompts import TINY_FORMAT

    return solution("01_diagnosis", "instruction_exact_match")(model, tokenizer, task, split, TINY_FORMAT)


def exact_match_words_for_tokens(model, tokenizer, task, split, fmt):
    """Wrong: generates one token per word of the longest answer (plus one) -- enough with the tiny
    model's word-level tokenizer, too few where a word is several tokens."""
    from ivedu.evaluation import exact_match
    from ivedu.generation import greedy_generate
    from ivedu.prompts import instructed_prompt

    examples = task.split(split)
    prompts = [instructed_prompt(task, ex.input, p, fmt) for p in range(len(task.instructions)) for ex in examples]
    golds = [ex.output for _ in task.instructions for ex in examples]
    max_new = max(len(g.split()) for g in golds) + 1
    hits = exact_match(greedy_generate(model, tokenizer, prompts, max_new_tokens=max_new, stop=fmt.stop), golds)
    return sum(hits) / len(hits)


def knowledge_after_the_instruction(model, tokenizer, task, split, fmt):
    """Wrong: exercise 1.3 with the candidates ranked after the instruction, in the chat format."""
    from ivedu.generation import answer_logprobs
    from ivedu.prompts import instructed_prompt

    ranked = []
    for ex in task.split(split):
        scores = answer_logprobs(model, tokenizer, [instructed_prompt(task, ex.input, 0, fmt)] * len(ex.candidates),
                                 list(ex.candidates))
        ranked.append(bool((scores[0] > scores[1:]).all()))
    right = abilities_reference(model, tokenizer, task, split, fmt)
    return {"instruction_following": right["instruction_following"], "knowledge": sum(ranked) / len(ranked)}


def abilities_first_phrasing_only(model, tokenizer, task, split, fmt):
    """Wrong: exercise 1.3 with instruction following scored under the first phrasing only."""
    from ivedu.evaluation import exact_match, greedy_answers
    from ivedu.prompts import instructed_prompt

    examples = task.split(split)
    prompts = [instructed_prompt(task, ex.input, 0, fmt) for ex in examples]
    golds = [ex.output for ex in examples]
    hits = exact_match(greedy_answers(ModelUnderStudy(model, tokenizer, fmt), prompts, golds), golds)
    return {"instruction_following": sum(hits) / len(hits),
            "knowledge": abilities_reference(model, tokenizer, task, split, fmt)["knowledge"]}


def bwt_trace_convention(R):
    """Wrong for this exercise: divides by T (TRACE's convention) instead of T - 1."""
    R = np.asarray(R, dtype=float)
    return float((R[-1] - np.diag(R)).sum() / R.shape[0])


WRONG_ANSWERS = [
    (check_knowledge_score, knowledge_under_the_instruction, "statement"),
    (check_instruction_exact_match, exact_match_first_phrasing_only, "phrasing"),
    (check_backward_transfer, bwt_trace_convention, "T - 1"),
    (check_abilities, knowledge_after_the_instruction, "statement_prompt"),
    (check_abilities, abilities_first_phrasing_only, r"(?s)instruction_following.*every phrasing|phrasing"),
]


@pytest.mark.parametrize("check, wrong, message", WRONG_ANSWERS, ids=[w[1].__name__ for w in WRONG_ANSWERS])
def test_checker_rejects_the_planted_wrong_answer(check, wrong, message):
    with pytest.raises(ExerciseError, match=message):
        check(wrong)


@pytest.mark.parametrize("check, wrong", [(check_knowledge_score, knowledge_mean_per_token),
                                          (check_instruction_exact_match, exact_match_in_the_plain_format),
                                          (check_instruction_exact_match, exact_match_words_for_tokens)])
def test_mistakes_of_real_tokenizers_and_formats_pass_on_the_tiny_model(check, wrong, capsys):
    """These mistakes are invisible on the tiny model (one word-level token per answer, its own plain
    format): only the check on the chapter's model, below, can catch them."""
    check(wrong)
    assert "correct" in capsys.readouterr().out


# ---------------------------------------------------------------- on the real-model profile (smol)

@pytest.fixture(scope="module")
def smol_case(smol):
    """Exercise 1.3's check cell on the smol profile: SmolLM2 in its chat format, its two general
    tasks cut to a few examples."""
    settings, model, tokenizer, fmt, world = smol_world(smol, "ch1")
    tasks = [small(world.task(name)) for name in settings.data.general_tasks]
    return {"lm": ModelUnderStudy(model, tokenizer, fmt, "smol"), "tasks": tasks, "split": "test"}


def test_abilities_check_passes_the_solution_on_the_real_model(smol_case, capsys):
    check_abilities(solution("01_diagnosis", "abilities"), **smol_case)
    assert "correct" in capsys.readouterr().out


def test_abilities_check_fails_the_stub_and_a_planted_wrong_answer_on_the_real_model(smol_case):
    with pytest.raises(ExerciseError, match="NotImplementedError"):
        check_abilities(stub, **smol_case)
    with pytest.raises(ExerciseError, match="statement_prompt"):
        check_abilities(knowledge_after_the_instruction, **smol_case)
    # the chapter's own cases catch it too: on a real model the instruction changes the ranking
    lm = smol_case["lm"]
    args = (lm.model, lm.tokenizer)
    gaps = [abs(knowledge_after_the_instruction(*args, t, "test", lm.fmt)["knowledge"]
                - abilities_reference(*args, t, "test", lm.fmt)["knowledge"]) for t in smol_case["tasks"]]
    assert max(gaps) > 1 / len(smol_case["tasks"][0].test), gaps


@pytest.fixture(scope="module")
def smol_scores(smol):
    """Exercises 1.1 and 1.2's check cells on the smol profile: SmolLM2 before fine-tuning, its two
    general tasks cut to the checker's own 12 examples, and its chat format (exercise 1.2's only)."""
    settings, model, tokenizer, fmt, world = smol_world(smol, "ch1")
    return {"lm": ModelUnderStudy(model, tokenizer, fmt, "smol"), "split": "test",
            "tasks": [small(world.task(name), 12) for name in settings.data.general_tasks]}


def test_knowledge_score_check_on_the_real_model(smol, smol_scores, capsys):
    where = smol_scores
    check_knowledge_score(solution("01_diagnosis", "knowledge_ranking"), **where)
    assert "8 task/model pairs" in capsys.readouterr().out
    with pytest.raises(ExerciseError, match="NotImplementedError"):
        check_knowledge_score(stub, **where)
    # Length-normalised ranking differs from the summed one where candidates differ in length, as
    # antonyms do: 3 of antonym's first 24 test examples on SmolLM2, more than the check's
    # tolerance of one (capitalize and sentiment, the chapter's first two tasks, differ on one).
    _, _, _, _, world = smol_world(smol, "ch1")
    antonyms = {**where, "tasks": [world.task("antonym")]}
    check_knowledge_score(solution("01_diagnosis", "knowledge_ranking"), **antonyms)
    with pytest.raises(ExerciseError, match="(?s)chapter's model on the 'antonym' task.*summed"):
        check_knowledge_score(knowledge_mean_per_token, **antonyms)


def test_instruction_exact_match_check_on_the_real_model(smol_scores, capsys):
    where = smol_scores
    check_instruction_exact_match(solution("01_diagnosis", "instruction_exact_match"), **where)
    assert "8 task/model pairs" in capsys.readouterr().out
    with pytest.raises(ExerciseError, match="NotImplementedError"):
        check_instruction_exact_match(stub, **where)
    with pytest.raises(ExerciseError, match="(?s)chapter's model on the 'capitalize' task.*chapter's format fmt"):
        check_instruction_exact_match(exact_match_in_the_plain_format, **where)
    with pytest.raises(ExerciseError, match="(?s)chapter's model on the 'capitalize' task.*not its words"):
        check_instruction_exact_match(exact_match_words_for_tokens, **where)
