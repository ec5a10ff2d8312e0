"""The student build: chapters without their solutions, as notebooks and as a site.

``python -m ivedu.student`` (or ``make student``) writes, under ``_build/student/``:

- ``notebooks/``: every chapter of ``_toc.yml`` as a notebook for learners -- solution cells
  (tagged ``solution``) removed, exercise stubs and check cells kept, outputs cleared, each
  ``{exercise}`` directive rewritten as plain markdown and each dropdown admonition (an
  exercise's hint) as an HTML ``<details>`` element a learner unfolds, so they read well in
  Jupyter and Colab (which do not know Jupyter Book's directives);
- ``site/``: the built book (``_build/html``, from ``make book``) with the solutions taken
  out: every cell tagged ``solution`` is cut from the chapter pages (not hidden behind a
  toggle: gone from the HTML), and the notebooks the pages offer for download
  (``_sources/``) are replaced by the student notebooks. Nothing is executed again, so it
  takes a second; ``make student`` runs ``make book`` first. ``--no-site`` skips this step.

Building the students' site by post-processing the executed one, rather than building a
second book from re-tagged notebooks, is deliberate: the solutions still ran (every check
passed, every later figure is there), the build is not repeated (jupyter-cache hashes cell
tags, so re-tagged chapters would all execute again), and the downloadable sources, which a
second build would copy with their solutions, are replaced too.

It lives in the package (not a script) so a teacher who installed ivedu can run it on a copy
of the book, and so the tests can call :func:`build_student_notebooks` directly. Notebooks are
read and written as plain JSON: the core package does not need nbformat.

The exercise convention it relies on (see ``book/teachers.md``): a markdown cell with an
``{exercise}`` directive, a stub cell tagged ``exercise``, a solution cell tagged ``solution``
and ``hide-input``, and a check cell that calls an ``ivedu.exercises`` checker.
:func:`exercises_in` finds them and says what is wrong with a malformed one.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

STUDENT_DIR = Path("_build") / "student"
EXERCISE_TAG, SOLUTION_TAG, HIDE_TAG = "exercise", "solution", "hide-input"
_DIRECTIVE = re.compile(r"^(`{3,})\{exercise\}[ \t]*(?P<title>[^\n]*)\n(?P<body>.*?)^\1[ \t]*$", re.M | re.S)
_OPTION = re.compile(r"^:[\w-]+:.*\n?", re.M)
_ADMONITION = re.compile(r"^(`{3,})\{admonition\}[ \t]*(?P<title>[^\n]*)\n(?P<body>.*?)^\1[ \t]*$", re.M | re.S)
_DROPDOWN = re.compile(r"^:class:.*\bdropdown\b", re.M)
_SOLUTION_DIV = re.compile(r'<div class="[^"]*\btag_solution\b[^"]*"[^>]*>', re.I)
_ANY_DIV = re.compile(r"<div\b|</div\s*>", re.I)


@dataclass(frozen=True)
class Exercise:
    """One exercise of a notebook: the indices of its stub, solution and check cells."""

    stub: int
    solution: int
    check: int


def source(cell: dict) -> str:
    """A cell's source as one string (notebooks store it as a string or a list of lines)."""
    src = cell.get("source", "")
    return src if isinstance(src, str) else "".join(src)


def tags(cell: dict) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def read_notebook(path: Path) -> dict:
    """A notebook as a dict (its JSON), with a clear error if it is not one."""
    try:
        nb = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read notebook {path}: {err}") from err
    if not isinstance(nb, dict) or "cells" not in nb:
        raise ValueError(f"{path} is not a Jupyter notebook (no 'cells')")
    return nb


def write_notebook(nb: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def exercises_in(nb: dict, name: str = "notebook") -> list[Exercise]:
    """Every exercise of ``nb``: each ``exercise`` cell must be followed by a ``solution`` cell
    (also tagged ``hide-input``) and then a check cell calling a ``check_`` function.

    Raises ``ValueError`` naming the cell and the rule it breaks, so a chapter author sees at
    once why the student build or the tests reject a chapter.
    """
    cells = nb["cells"]
    found = []
    for i, cell in enumerate(cells):
        t = tags(cell)
        if SOLUTION_TAG in t and (i == 0 or EXERCISE_TAG not in tags(cells[i - 1])):
            raise ValueError(f"{name}, cell {i}: a solution cell must directly follow its stub cell (tagged "
                             f"{EXERCISE_TAG!r})")
        if EXERCISE_TAG not in t:
            continue
        if cell.get("cell_type") != "code" or "NotImplementedError" not in source(cell):
            raise ValueError(f"{name}, cell {i}: an {EXERCISE_TAG!r} cell must be a code cell whose function "
                             "body raises NotImplementedError")
        if i + 2 >= len(cells):
            raise ValueError(f"{name}, cell {i}: an exercise needs a solution cell and a check cell after its stub")
        solution, check = cells[i + 1], cells[i + 2]
        if SOLUTION_TAG not in tags(solution) or HIDE_TAG not in tags(solution):
            raise ValueError(f"{name}, cell {i + 1}: the cell after a stub must be its solution, tagged "
                             f"{SOLUTION_TAG!r} and {HIDE_TAG!r}, got tags {tags(solution)}")
        if check.get("cell_type") != "code" or "check_" not in source(check) or tags(check):
            raise ValueError(f"{name}, cell {i + 2}: the cell after a solution must be an untagged check cell "
                             "calling an ivedu.exercises checker (check_...)")
        found.append(Exercise(i, i + 1, i + 2))
    return found


def _plain_exercise(match: re.Match) -> str:
    """An ``{exercise}`` directive as plain markdown: a bold title line and the body."""
    body = _OPTION.sub("", match.group("body")).strip()
    return f"**Exercise {match.group('title').strip()}**\n\n{body}\n"


def _plain_dropdown(match: re.Match) -> str:
    """A dropdown admonition (an exercise's hint) as an HTML ``<details>`` element, which Jupyter
    and Colab render folded; any other admonition is left as it is."""
    if not _DROPDOWN.search(match.group("body")):
        return match.group(0)
    body = _OPTION.sub("", match.group("body")).strip()
    return f"<details>\n<summary>{match.group('title').strip()}</summary>\n\n{body}\n\n</details>\n"


def _cleared(cell: dict) -> dict:
    cell = json.loads(json.dumps(cell))
    if cell.get("cell_type") == "code":
        cell["outputs"], cell["execution_count"] = [], None
    return cell


def student_notebook(nb: dict, name: str = "notebook") -> dict:
    """``nb`` for learners: solution cells dropped, outputs cleared, exercise directives in plain
    markdown, hints (dropdown admonitions) as ``<details>`` elements."""
    exercises_in(nb, name)  # refuse a malformed chapter rather than leak or lose a solution
    out = dict(nb)
    cells = []
    for cell in nb["cells"]:
        if SOLUTION_TAG in tags(cell):
            continue
        cell = _cleared(cell)
        if cell.get("cell_type") == "markdown":
            cell["source"] = _DIRECTIVE.sub(_plain_exercise, _ADMONITION.sub(_plain_dropdown, source(cell)))
        cells.append(cell)
    out["cells"] = cells
    return out


def chapter_notebooks(root: Path) -> list[Path]:
    """The notebooks listed in ``root/_toc.yml``, in order (``file: book/01_x`` -> ``book/01_x.ipynb``)."""
    toc = Path(root) / "_toc.yml"
    if not toc.exists():
        raise ValueError(f"no _toc.yml in {root}: run from the book's root or pass --root")
    files = re.findall(r"(?:root|file):\s*(\S+)", toc.read_text(encoding="utf-8"))
    return [Path(root) / f"{f}.ipynb" for f in files if (Path(root) / f"{f}.ipynb").exists()]


def build_student_notebooks(root: Path, out: Path) -> list[Path]:
    """Write the learners' notebooks of every chapter under ``out``; returns their paths."""
    written = []
    for path in chapter_notebooks(root):
        target = Path(out) / path.name
        write_notebook(student_notebook(read_notebook(path), str(path)), target)
        written.append(target)
    return written


def strip_solution_cells(page: str) -> tuple[str, int]:
    """``page`` (a built chapter's HTML) without its solution cells, and how many were cut.

    myst-nb gives each cell a ``div`` whose classes include ``tag_<tag>`` for each of its tags;
    the cut runs from that ``div`` to its matching ``</div>``, nested ``div`` elements counted.
    """
    out, count, pos = [], 0, 0
    while (start := _SOLUTION_DIV.search(page, pos)) is not None:
        out.append(page[pos:start.start()])
        depth = 1
        for tag in _ANY_DIV.finditer(page, start.end()):
            depth += 1 if tag.group(0).lower().startswith("<div") else -1
            if depth == 0:
                pos = tag.end()
                break
        else:
            raise ValueError("a solution cell's <div> is never closed: is this a page built by Jupyter Book?")
        count += 1
    out.append(page[pos:])
    return "".join(out), count


def build_student_site(root: Path, out: Path, html: Path | None = None) -> Path:
    """Copy the built site to ``out`` without solutions; returns ``out``.

    ``html``: the built book (default ``root/_build/html``; ``make book`` writes it). Each
    chapter page loses its ``solution`` cells, each downloadable notebook under ``_sources``
    becomes the student notebook. Raises ``ValueError`` if the site is missing, or older than
    a chapter (it would show an outdated chapter), or if a chapter with exercises has no
    solution cell to cut (the page was not built from the current chapter).
    """
    root, out = Path(root), Path(out)
    html = Path(html) if html else root / "_build" / "html"
    if not (html / "index.html").exists():
        raise ValueError(f"no built book in {html}: run `make book` first")
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(html, out)
    for notebook in chapter_notebooks(root):
        relative = notebook.relative_to(root)
        page = out / relative.with_suffix(".html")
        if not page.exists() or page.stat().st_mtime < notebook.stat().st_mtime:
            raise ValueError(f"{page.relative_to(out)} is missing or older than {relative}: run `make book` first")
        nb = read_notebook(notebook)
        text, cut = strip_solution_cells(page.read_text(encoding="utf-8"))
        expected = len(exercises_in(nb, str(notebook)))
        if cut != expected:
            raise ValueError(f"{page.name} has {cut} solution cells but {relative} has {expected} exercises: "
                             "rebuild the book with `make book`")
        page.write_text(text, encoding="utf-8")
        source_copy = out / "_sources" / relative
        if source_copy.exists():
            write_notebook(student_notebook(nb, str(notebook)), source_copy)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ivedu.student", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("."), help="the book's root (holds _toc.yml)")
    parser.add_argument("--out", type=Path, default=None, help=f"output folder (default ROOT/{STUDENT_DIR})")
    parser.add_argument("--no-site", action="store_true", help="write the notebooks only; do not build the site")
    args = parser.parse_args(argv)
    out = args.out or args.root / STUDENT_DIR
    notebooks = build_student_notebooks(args.root, out / "notebooks")
    print(f"wrote {len(notebooks)} student notebooks to {out / 'notebooks'}")
    if not args.no_site:
        site = build_student_site(args.root, out / "site")
        print(f"wrote the students' site (solutions removed) to {site}")


if __name__ == "__main__":
    main()
