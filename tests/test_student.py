"""The student build (``ivedu.student``): notebooks and a site without the solutions."""

import re
from pathlib import Path

import pytest

from ivedu.student import (build_student_notebooks, build_student_site, chapter_notebooks, exercises_in,
                           read_notebook, source, strip_solution_cells, student_notebook, tags)

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = chapter_notebooks(ROOT)


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


MARKS = re.compile(r"^\*\*Difficulty:\*\* (★[★☆]{2}) · \*\*Importance:\*\* (essential|recommended|optional)\b", re.M)
HINT = re.compile(r"^```\{admonition\} Hint\n:class: dropdown\n(?P<body>.*?)^```$", re.M | re.S)


def test_teachers_page_lists_every_exercise_with_its_chapter_step_marks_and_time():
    rows = {m.group(1): m.groups() for m in re.finditer(
        r"^\| (\d\.\d) ([^|]+?) \| (\d) \| ([^|]+?) \| (★[★☆]{2}) \| (essential|recommended|optional) \| (\d+) min \|$",
        (ROOT / "book" / "teachers.md").read_text(), re.M)}
    listed = set()
    for path in CHAPTERS:
        nb = read_notebook(path)
        for ex in exercises_in(nb):
            box = source(nb["cells"][ex.stub - 1])
            number, title, minutes = re.search(r"\{exercise\}\s+(\d\.\d) · (.+?) · about (\d+) minutes", box).groups()
            assert number in rows, f"book/teachers.md does not list exercise {number}"
            _, row_title, chapter, step, difficulty, importance, row_minutes = rows[number]
            assert (row_title, chapter, row_minutes) == (title, number[0], minutes), (number, rows[number])
            assert step.strip(), f"exercise {number}: say which step of the method it trains"
            assert MARKS.search(box).groups() == (difficulty, importance), \
                f"exercise {number}: its box and book/teachers.md give different marks"
            listed.add(number)
    assert set(rows) == listed, f"book/teachers.md lists exercises the chapters do not have: {set(rows) - listed}"


def test_every_exercise_has_its_marks_and_a_hint_and_each_method_chapter_an_open_extension():
    for path in CHAPTERS:
        nb = read_notebook(path)
        for ex in exercises_in(nb):
            box = source(nb["cells"][ex.stub - 1])
            assert MARKS.search(box), f"{path.name}, cell {ex.stub - 1}: mark the exercise's difficulty and importance"
            hint = HINT.search(box)
            assert hint and hint.group("body").strip(), f"{path.name}, cell {ex.stub - 1}: give the exercise a hint"
        further = [source(c) for c in nb["cells"] if c["cell_type"] == "markdown"
                   and re.search(r"^```\{exercise\} Going further · .+ · open-ended$", source(c), re.M)]
        if path.stem[:2] in ("01", "02", "03", "04"):
            assert len(further) == 1, f"{path.name}: a method chapter ends with one open-ended 'Going further' exercise"
            assert MARKS.search(further[0]) and "?" in further[0], f"{path.name}: mark it and ask a question"


def test_marks_and_hints_survive_into_the_student_notebooks_as_folded_details(tmp_path):
    for path, student_path in zip(CHAPTERS, build_student_notebooks(ROOT, tmp_path)):
        original, student = read_notebook(path), read_notebook(student_path)
        text = "\n".join(source(c) for c in student["cells"])
        assert "{admonition} Hint" not in text, f"{student_path.name}: hints must be plain <details> for Jupyter"
        for ex in exercises_in(original):
            box = source(original["cells"][ex.stub - 1])
            assert MARKS.search(box).group(0) in text
            hint = HINT.search(box).group("body").strip()
            assert f"<details>\n<summary>Hint</summary>\n\n{hint}\n\n</details>" in text, (student_path.name, ex)


def test_a_dropdown_becomes_details_and_another_admonition_is_kept():
    nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source":
                     "```{exercise} 9.1 · Add · about 1 minute\n:label: ex-9-1\n\nWrite `add`.\n```\n\n"
                     "```{admonition} Hint\n:class: dropdown\n\nUse `+`.\n```\n\n"
                     "```{admonition} Note\n:class: note\n\nKept.\n```"}]}
    text = source(student_notebook(nb)["cells"][0])
    assert "<details>\n<summary>Hint</summary>\n\nUse `+`.\n\n</details>" in text
    assert "```{admonition} Note\n:class: note\n\nKept.\n```" in text and "dropdown" not in text
