"""The exercise framework and the checkers of chapters 1 and 2.

Every checker must pass on the reference solution (the solution cell's code) and fail, with
an :class:`ExerciseError`, on a planted wrong answer -- a mistake a learner could make -- and
on the untouched stub.
"""

import numpy as np
import pytest
import torch

from ivedu.exercises import Case, ExerciseError, call_learner, check_against_reference, compare, passed


def stub(*args, **kwargs):
    raise NotImplementedError("your code here")


# ---------------------------------------------------------------- framework

def test_call_learner_says_the_stub_is_not_filled_in():
    with pytest.raises(ExerciseError, match="still raises NotImplementedError"):
        call_learner(stub, 1)


def test_call_learner_reports_a_crash_with_its_input():
    def broken(x):
        return x / 0

    with pytest.raises(ExerciseError, match="ZeroDivisionError on input 3"):
        call_learner(broken, 3, label="on input 3")


def test_call_learner_rejects_a_result_instead_of_a_function():
    with pytest.raises(ExerciseError, match="pass the function itself"):
        call_learner(0.5)


@pytest.mark.parametrize("got, expected", [
    (0.5, 0.5), (0.5 + 1e-7, 0.5), (torch.tensor(0.25), 0.25), (float("nan"), float("nan")),
    (torch.ones(2, 3), torch.ones(2, 3)), (np.zeros(4), torch.zeros(4)),
    ([(0, 1), (2, 3)], [(0, 1), (2, 3)]), ({"a": 1.0}, {"a": 1.0}), ("x", "x"),
])
def test_compare_accepts_equal_values(got, expected):
    compare(got, expected)


@pytest.mark.parametrize("got, expected, message", [
    (0.4, 0.5, "is 0.4, expected 0.5"),
    (True, 1.0, "should be a number"),
    ("0.5", 0.5, "should be a number"),
    (torch.ones(3), torch.ones(2, 3), r"has shape \[3\], expected \[2, 3\]"),
    (torch.tensor([1.0, 2.0, 5.0]), torch.tensor([1.0, 2.0, 3.0]), r"largest difference 2 at index \[2\]"),
    ([(0, 1)], [(0, 1), (2, 3)], "has 1 items, expected 2"),
    ([(0, 1), (3, 2)], [(0, 1), (2, 3)], r"\[1\]\[0\] is 3, expected 2"),
    ({"a": 1.0}, {"b": 1.0}, "has keys"),
    ([1.0], torch.ones(1), "should be a tensor"),
])
def test_compare_names_what_differs(got, expected, message):
    with pytest.raises(ExerciseError, match=message):
        compare(got, expected, "the answer")


def test_check_against_reference_names_the_case_and_gives_the_hint():
    cases = [Case("on 2", (2,)), Case("on 3", (3,))]
    assert check_against_reference(lambda x: x * x, lambda x: x ** 2, cases) == 2
    with pytest.raises(ExerciseError, match=r"(?s)on 3: the result is 6, expected 9.*Hint: square it"):
        check_against_reference(lambda x: 2 * x, lambda x: x ** 2, cases, hint="square it")


def test_check_against_reference_needs_cases():
    with pytest.raises(ValueError, match="no cases"):
        check_against_reference(abs, abs, [])


def test_exercise_error_is_an_assertion_error():
    assert issubclass(ExerciseError, AssertionError)


def test_passed_prints_one_line(capsys):
    passed("knowledge score", "3 tasks")
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "correct" in out and "3 tasks" in out


# ---------------------------------------------------------------- planted wrong answers
# Each is a mistake a learner could make; its checker must reject it. The reference
# solutions are the notebooks' solution cells, checked by test_solution_cells_pass below.

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


def indirect_effect_all_positions(model, tokenizer, prompts, answers, mean_activations, layer, head):
    """Wrong: patches the head at every position, not only the last token."""
    from ivedu.generation import last_token_logits
    from ivedu.hooks import edit_head_outputs
    from ivedu.mediation import first_answer_tokens, gold_probs

    golds = first_answer_tokens(tokenizer, answers)
    before = gold_probs(last_token_logits(model, tokenizer, prompts), golds)

    def patch(x):
        x = x.clone()
        x[:, :, head] = mean_activations[layer, head]
        return x

    with edit_head_outputs(model, {layer: patch}):
        after = gold_probs(last_token_logits(model, tokenizer, prompts), golds)
    return float((after - before).mean())


def top_heads_divided_by_layers(effects, k):
    """Wrong: unravels the flat index with the number of layers instead of heads."""
    n_layers = effects.shape[0]
    return [(int(i) // n_layers, int(i) % n_layers) for i in effects.flatten().argsort(descending=True)[:k]]


def vector_through_whole_projection(model, mean_activations, heads):
    """Wrong: projects each head's layer's full mean activation (all heads), not the head alone."""
    from ivedu.architectures import model_layout

    layout = model_layout(model)
    with torch.no_grad():
        return sum(layout.out_projs[layer].weight @ mean_activations[layer].flatten() for layer, _ in heads)


def steered_logits_all_positions(model, tokenizer, prompts, layer, vector, scale=1.0):
    """Wrong: adds the vector at every position (padding and instruction tokens included)."""
    from ivedu.generation import last_token_logits
    from ivedu.hooks import add_to_residual

    with add_to_residual(model, layer, vector, positions="all", scale=scale, site="layer"):
        return last_token_logits(model, tokenizer, prompts)


def steered_logits_hook_left_attached(model, tokenizer, prompts, layer, vector, scale=1.0):
    """Wrong: right logits, but the hook stays on the model afterwards."""
    from ivedu.architectures import model_layout
    from ivedu.generation import last_token_logits

    def add(module, args, output):
        hidden = output.clone()
        hidden[:, -1] += scale * vector
        return hidden

    model_layout(model).layers[layer].register_forward_hook(add)
    return last_token_logits(model, tokenizer, prompts)


WRONG_ANSWERS = [
    ("ch1", "check_knowledge_score", knowledge_under_the_instruction, "statement"),
    ("ch1", "check_instruction_exact_match", exact_match_first_phrasing_only, "phrasing"),
    ("ch1", "check_backward_transfer", bwt_trace_convention, "T - 1"),
    ("ch2", "check_indirect_effect", indirect_effect_all_positions, "last position"),
    ("ch2", "check_top_heads", top_heads_divided_by_layers, "not of layers"),
    ("ch2", "check_instruction_vector", vector_through_whole_projection, "only\nthe chosen heads|only the chosen"),
    ("ch2", "check_add_to_residual", steered_logits_all_positions, r"\[:, -1\]"),
    ("ch2", "check_add_to_residual", steered_logits_hook_left_attached, "left a hook attached"),
]


@pytest.mark.parametrize("chapter, checker, wrong, message", WRONG_ANSWERS,
                         ids=[w[2].__name__ for w in WRONG_ANSWERS])
def test_checker_rejects_the_planted_wrong_answer(chapter, checker, wrong, message):
    import importlib

    check = getattr(importlib.import_module(f"ivedu.exercises.{chapter}"), checker)
    with pytest.raises(ExerciseError, match=message):
        check(wrong)


def test_a_hook_left_behind_is_removed(tiny):
    from ivedu.architectures import model_layout
    from ivedu.exercises import tiny_model
    from ivedu.exercises.ch2 import check_add_to_residual

    model, _ = tiny_model()
    layers = model_layout(model).layers
    with pytest.raises(ExerciseError):
        check_add_to_residual(steered_logits_hook_left_attached)
    assert all(not layer._forward_hooks for layer in layers)
