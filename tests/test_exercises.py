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

    golds = first_answer_tokens(tokenizer, prompts, answers)
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


# ---------------------------------------------------------------- the chapters' exercises

from pathlib import Path  # noqa: E402

from ivedu.student import (build_student_notebooks, build_student_site, chapter_notebooks,  # noqa: E402
                           exercises_in, read_notebook, source, strip_solution_cells, student_notebook, tags)

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = chapter_notebooks(ROOT)
EXERCISES = [(path, ex) for path in CHAPTERS for ex in exercises_in(read_notebook(path), path.name)]


def _cell_ids(item):
    path, ex = item
    return f"{path.stem}-cell{ex.stub}"


def test_chapters_1_and_2_have_at_least_three_exercises_each():
    counts = {path.stem[:2]: len(exercises_in(read_notebook(path))) for path in CHAPTERS}
    assert counts.get("01", 0) >= 3 and counts.get("02", 0) >= 3, counts


def test_every_checker_of_chapters_1_and_2_is_used_by_an_exercise():
    import ivedu.exercises.ch1 as ch1
    import ivedu.exercises.ch2 as ch2

    used = " ".join(source(read_notebook(path)["cells"][ex.check]) for path, ex in EXERCISES)
    for module in (ch1, ch2):
        for name, obj in vars(module).items():
            if name.startswith("check_") and getattr(obj, "__module__", "") == module.__name__:
                assert f"{name}(" in used, f"{module.__name__}.{name} is not called by any chapter's check cell"


def _run(*cells: str) -> None:
    namespace: dict = {}
    for code in cells:
        exec(compile(code, "<cell>", "exec"), namespace)


def _checker_call(check_cell: str) -> str:
    """The check cell's imports and its ``check_...(...)`` call, without any other line.

    A chapter may use the learner's function after the check (``print(f(model, ...))``), on
    variables of the chapter that a test does not have; the check itself needs only these.
    """
    import ast

    kept = [node for node in ast.parse(check_cell).body
            if isinstance(node, (ast.Import, ast.ImportFrom))
            or (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
                and isinstance(node.value.func, ast.Name) and node.value.func.id.startswith("check_"))]
    assert any(isinstance(n, ast.Expr) for n in kept), f"no check_...(...) call in the check cell:\n{check_cell}"
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


# ---------------------------------------------------------------- the student build

def _solution_lines(nb: dict) -> set[str]:
    """Lines that only solutions contain: in no other cell, not blank, not an import or a comment."""
    cells = nb["cells"]
    solutions = {ex.solution for ex in exercises_in(nb)}
    other_lines = {line.strip() for i, c in enumerate(cells) if i not in solutions for line in source(c).splitlines()}
    lines = set()
    for ex in exercises_in(nb):
        for line in source(cells[ex.solution]).splitlines():
            line = line.strip()
            if line and line not in other_lines and not line.startswith(("import ", "from ", "#", '"""')):
                lines.add(line)
    return lines


def test_student_notebooks_contain_no_solution_code(tmp_path):
    written = build_student_notebooks(ROOT, tmp_path)
    assert [p.name for p in written] == [p.name for p in CHAPTERS]
    for path, student_path in zip(CHAPTERS, written):
        original, student = read_notebook(path), read_notebook(student_path)
        text = "\n".join(source(c) for c in student["cells"])
        leaked = sorted(line for line in _solution_lines(original) if line in text)
        assert not leaked, f"{student_path.name} still contains solution code: {leaked[:3]}"
        assert not any("solution" in tags(c) for c in student["cells"])
        assert not any(c.get("outputs") for c in student["cells"] if c["cell_type"] == "code")
        n_stubs = sum("exercise" in tags(c) for c in student["cells"])
        assert n_stubs == len(exercises_in(original)), "every stub must stay in the student notebook"
        assert "{exercise}" not in text, "exercise directives must be plain markdown in the student notebooks"


def test_student_notebook_keeps_stub_and_check_and_drops_the_solution():
    nb = {"cells": [
        {"cell_type": "markdown", "metadata": {}, "source": "```{exercise} 9.1 · Add · about 1 minute\n:label: ex-9-1\n"
                                                           ":nonumber:\n\nWrite `add`.\n```"},
        {"cell_type": "code", "metadata": {"tags": ["exercise"]}, "outputs": [], "execution_count": None,
         "source": "def add(a, b):\n    raise NotImplementedError('your code here')"},
        {"cell_type": "code", "metadata": {"tags": ["solution", "hide-input"]}, "outputs": [{"x": 1}],
         "execution_count": 3, "source": "def add(a, b):\n    return a + b"},
        {"cell_type": "code", "metadata": {}, "outputs": [{"output_type": "stream"}], "execution_count": 4,
         "source": "check_add(add)"},
    ]}
    student = student_notebook(nb)
    assert [source(c) for c in student["cells"]][1:] == [source(nb["cells"][1]), "check_add(add)"]
    assert source(student["cells"][0]).startswith("**Exercise 9.1 · Add · about 1 minute**\n\nWrite `add`.")
    assert student["cells"][2]["outputs"] == [] and student["cells"][2]["execution_count"] is None
    assert len(nb["cells"]) == 4 and nb["cells"][2]["outputs"] == [{"x": 1}], "the input notebook is not changed"


def _exercise_cells() -> list[dict]:
    return [
        {"cell_type": "markdown", "metadata": {}, "source": "x"},
        {"cell_type": "code", "metadata": {"tags": ["exercise"]}, "source": "raise NotImplementedError"},
        {"cell_type": "code", "metadata": {"tags": ["solution", "hide-input"]}, "source": "pass"},
        {"cell_type": "code", "metadata": {}, "source": "check_x(x)"},
        {"cell_type": "markdown", "metadata": {}, "source": "the end"},
    ]


@pytest.mark.parametrize("keep, retag, message", [
    ([0, 1, 3, 4], None, "must be its solution"),
    ([0, 1, 2, 3, 4], ["solution"], "hide-input"),
    ([0, 1, 2, 4], None, "untagged check cell"),
    ([0, 1, 2], None, "needs a solution cell and a check cell"),
    ([0, 2, 3, 4], None, "must directly follow its stub"),
])
def test_a_malformed_exercise_is_refused(keep, retag, message):
    cells = _exercise_cells()
    if retag:
        cells[2]["metadata"]["tags"] = retag
    with pytest.raises(ValueError, match=message):
        student_notebook({"cells": [cells[i] for i in keep]})


PAGE = """<main><div class="cell docutils container"><div class="cell_input"><pre>stub()</pre></div></div>
<div class="cell tag_solution tag_hide-input docutils container"><details><div class="cell_input">
<div class="highlight"><pre>solution()</pre></div></div></details></div>
<p>between</p><div class="cell tag_solution docutils container"><div><div>x</div></div></div><p>after</p></main>"""


def test_strip_solution_cells_cuts_each_cell_with_its_nested_divs():
    page, cut = strip_solution_cells(PAGE)
    assert cut == 2
    assert "solution()" not in page and ">x<" not in page
    assert "stub()" in page and "<p>between</p>" in page and page.endswith("<p>after</p></main>")
    assert page.count("<div") == page.count("</div>")


def test_strip_solution_cells_refuses_an_unclosed_cell():
    with pytest.raises(ValueError, match="never closed"):
        strip_solution_cells('<div class="cell tag_solution"><div></div>')


def _fake_build(root: Path) -> Path:
    """A built site for the chapters in ``root``: one page per chapter with its solution cells."""
    html = root / "_build" / "html"
    (html / "_sources" / "book").mkdir(parents=True)
    (html / "index.html").write_text("<html></html>")
    for path in CHAPTERS:
        n = len(exercises_in(read_notebook(path)))
        cells = '<div class="cell tag_solution docutils container"><pre>secret_answer()</pre></div>' * n
        page = html / path.relative_to(ROOT).with_suffix(".html")
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(f"<main>{cells}<p>text</p></main>")
        (html / "_sources" / path.relative_to(ROOT)).write_text(path.read_text())
    return html


def test_student_site_is_the_built_site_without_solutions(tmp_path):
    html = _fake_build(tmp_path)
    site = build_student_site(ROOT, tmp_path / "student", html)
    for path in CHAPTERS:
        relative = path.relative_to(ROOT)
        page = (site / relative.with_suffix(".html")).read_text()
        assert "secret_answer" not in page and "<p>text</p>" in page
        downloaded = read_notebook(site / "_sources" / relative)
        assert not any("solution" in tags(c) for c in downloaded["cells"])


def test_student_site_refuses_a_stale_build(tmp_path):
    html = _fake_build(tmp_path)
    page = html / CHAPTERS[1].relative_to(ROOT).with_suffix(".html")
    page.write_text("<main><p>built before the exercises were added</p></main>")
    with pytest.raises(ValueError, match="0 solution cells but"):
        build_student_site(ROOT, tmp_path / "student", html)
    import os

    os.utime(page, (0, 0))
    with pytest.raises(ValueError, match="older than"):
        build_student_site(ROOT, tmp_path / "student", html)
    with pytest.raises(ValueError, match="run `make book` first"):
        build_student_site(ROOT, tmp_path / "student", tmp_path / "nowhere")
