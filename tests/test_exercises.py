"""The exercise framework (``ivedu.exercises``) and the chapters' exercise cells.

Every exercise in a chapter is a stub cell, a solution cell and a check cell. The reference
solution must pass its check, and the untouched stub must fail it with a clear message. The
checkers' planted wrong answers are in ``test_exercises_ch1.py`` .. ``test_exercises_ch4.py``;
the student build is in ``test_student.py``.
"""

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from ivedu.exercises import Case, ExerciseError, call_learner, check_against_reference, compare, passed
from ivedu.student import chapter_notebooks, exercises_in, read_notebook, source


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


# ---------------------------------------------------------------- the chapters' exercises

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = chapter_notebooks(ROOT)
EXERCISES = [(path, ex) for path in CHAPTERS for ex in exercises_in(read_notebook(path), path.name)]


def _cell_ids(item):
    path, ex = item
    return f"{path.stem}-cell{ex.stub}"


def test_chapters_1_to_4_have_at_least_four_exercises_and_0_and_5_at_least_one():
    counts = {path.stem[:2]: len(exercises_in(read_notebook(path))) for path in CHAPTERS}
    assert all(counts.get(f"0{c}", 0) >= 4 for c in (1, 2, 3, 4)), counts
    assert counts.get("00", 0) >= 1 and counts.get("05", 0) >= 1, counts


def test_exercises_are_numbered_in_order_within_each_chapter():
    import re

    for path in CHAPTERS:
        cells = read_notebook(path)["cells"]
        numbers = [re.search(r"\{exercise\}\s+(\d+)\.(\d+)", source(cells[ex.stub - 1])).groups()
                   for ex in exercises_in(read_notebook(path))]
        assert numbers == [(str(int(path.stem[:2])), str(i)) for i in range(1, len(numbers) + 1)], (path.name, numbers)


def test_every_checker_is_used_by_an_exercise():
    import importlib

    modules = [importlib.import_module(f"ivedu.exercises.ch{c}") for c in range(6)]
    used = " ".join(source(read_notebook(path)["cells"][ex.check]) for path, ex in EXERCISES)
    for module in modules:
        for name, obj in vars(module).items():
            if name.startswith("check_") and getattr(obj, "__module__", "") == module.__name__:
                assert f"{name}(" in used, f"{module.__name__}.{name} is not called by any chapter's check cell"


def _run(*cells: str) -> None:
    namespace: dict = {}
    for code in cells:
        exec(compile(code, "<cell>", "exec"), namespace)


def _checker_call(check_cell: str) -> str:
    """The check cell's imports and its ``check_...(...)`` call, without any other line and
    without the call's keyword arguments.

    A chapter may use the learner's function after the check (``print(f(model, ...))``), on
    variables of the chapter that a test does not have; and a check may also run on the
    chapter's own model, passed as keyword arguments (``model=tuned.model, ...``). The check
    on the tiny model needs none of them; the chapter's cases are tested on the real-model
    profile in ``test_exercises_ch1.py`` .. ``test_exercises_ch4.py``.
    """
    kept = [node for node in ast.parse(check_cell).body
            if isinstance(node, (ast.Import, ast.ImportFrom))
            or (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
                and isinstance(node.value.func, ast.Name) and node.value.func.id.startswith("check_"))]
    assert any(isinstance(n, ast.Expr) for n in kept), f"no check_...(...) call in the check cell:\n{check_cell}"
    for node in kept:
        if isinstance(node, ast.Expr):
            assert all(isinstance(a, ast.Name) for a in node.value.args), \
                f"a check's positional arguments are the learner's functions; pass the chapter's inputs by keyword:\n{check_cell}"
            node.value.keywords = []
    return ast.unparse(ast.Module(body=kept, type_ignores=[]))


@pytest.mark.parametrize("item", EXERCISES, ids=[_cell_ids(e) for e in EXERCISES])
def test_solution_cell_passes_its_check(item, capsys):
    path, ex = item
    cells = read_notebook(path)["cells"]
    _run(source(cells[ex.stub]), source(cells[ex.solution]), _checker_call(source(cells[ex.check])))
    assert "correct" in capsys.readouterr().out


@pytest.mark.parametrize("item", EXERCISES, ids=[_cell_ids(e) for e in EXERCISES])
def test_stub_cell_fails_its_check_with_a_clear_message(item):
    path, ex = item
    cells = read_notebook(path)["cells"]
    with pytest.raises(ExerciseError, match="still raises NotImplementedError"):
        _run(source(cells[ex.stub]), _checker_call(source(cells[ex.check])))


@pytest.mark.parametrize("item", EXERCISES, ids=[_cell_ids(e) for e in EXERCISES])
def test_a_question_in_an_exercise_box_has_a_model_answer_in_its_solution(item):
    path, ex = item
    cells = read_notebook(path)["cells"]
    box, solution = source(cells[ex.stub - 1]), source(cells[ex.solution])
    body = box.split("\n", 1)[-1]  # a title may be a question the code answers ("Where does each answer start?")
    if "?" in body:
        assert solution.startswith("# Model answer."), f"{path.name}: the box asks a question; answer it in the solution"
