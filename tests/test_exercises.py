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
    with pytest.raises(ExerciseError, match=r"(?s)on 3 is 6, expected 9.*Hint: square it"):
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
