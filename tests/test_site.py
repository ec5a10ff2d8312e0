"""The built book, opened in a real browser: every chapter page renders its figures and no error.

``make book`` writes the site to ``_build/html``; these tests open each chapter's page in
headless Chromium (driven by Playwright) and check that every image decoded
(``naturalWidth > 0``), that pages with plots have figures, and that no error output,
traceback, broken cross-reference or uncaught script error appears.

They are skipped, saying why, when the site has not been built (or a page is older than its
chapter) or when no Chromium can be launched -- unless ``IVEDU_REQUIRE_SITE=1`` (set by
``.ci/run`` once it has built the book and found a browser), which turns each of those skips
into a failure. No Chromium can be launched without one installed: Playwright's own browser download needs the internet, so the tests look for a
system Chromium first (Debian's ``chromium-headless-shell`` or ``chromium``; ``.ci/run``
installs it), then for one Playwright installed, and ``IVEDU_CHROMIUM`` names any other
executable.

The student site (``make student``) is checked too, without a browser: none of its files --
pages, downloadable notebooks, search index -- may contain solution code.
"""

from __future__ import annotations

import html
import os
import re
import shutil
from pathlib import Path

import pytest

from ivedu.student import chapter_notebooks, exercises_in, read_notebook, source

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
EXECUTED = ROOT / "_build" / "jupyter_execute"
BUILT_PROFILE = ROOT / "_build" / ".profile"  # written by `make book`: the profile the site ran on
STUDENT_HTML = ROOT / "_build" / "student" / "site"
CHAPTERS = chapter_notebooks(ROOT)
BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome", "chrome")

# Selectors of what must not be on a rendered chapter page: error and stderr outputs of cells
# (myst-nb), docutils' marks for broken roles and directives.
ERROR_SELECTORS = (".output.error", ".output.traceback", ".output.stderr", ".cell_output .stderr",
                   ".problematic", ".system-message")
# What must not be in a cell's output: a traceback, or an exception's "SomeError: message" line
# (the stubs' source mentions NotImplementedError, so only outputs are searched).
ERROR_OUTPUT = re.compile(r"Traceback \(most recent call last\)|\b\w*(?:Error|Exception): ")

# Script errors every Jupyter Book 1 page has, whatever the book: sphinx-thebe 0.3.1 writes its
# `const THEBE_JS_URL = ...` config script into each page twice, and the second copy throws.
# The first copy has already defined the constants, so nothing on the page depends on it.
KNOWN_SCRIPT_ERRORS = ("Identifier 'THEBE_JS_URL' has already been declared",)

# Waits for every image to finish loading (forcing lazy ones to load) and reports those that
# failed: naturalWidth 0 means the browser could not decode the file.
BROKEN_IMAGES_JS = """
async () => {
  const images = [...document.querySelectorAll("main img, article img, .bd-article img")];
  for (const img of images) { img.loading = "eager"; }
  await Promise.all(images.map(img => img.complete ? null :
      new Promise(done => { img.addEventListener("load", done); img.addEventListener("error", done); })));
  return {count: images.length,
          broken: images.filter(img => !(img.naturalWidth > 0)).map(img => img.getAttribute("src"))};
}
"""


REQUIRED = os.environ.get("IVEDU_REQUIRE_SITE") == "1"


def _skip_or_fail(reason: str) -> None:
    """Skip with ``reason``, or fail with it when the site is required (CI)."""
    if REQUIRED:
        pytest.fail(f"{reason} (IVEDU_REQUIRE_SITE=1)")
    pytest.skip(reason)


def _chromium() -> str | None:
    """The executable to launch, or ``None`` to let Playwright use a browser it installed."""
    named = os.environ.get("IVEDU_CHROMIUM")
    if named:
        return named
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium, or a skip saying what is missing."""
    if not HTML.joinpath("index.html").exists():
        _skip_or_fail(f"the book is not built ({HTML} has no index.html): run `make book` first")
    try:
        from playwright import sync_api
    except ImportError:
        _skip_or_fail("Playwright is not installed (pip install playwright)")
    executable = _chromium()
    with sync_api.sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        except Exception as err:  # no browser Playwright can start: say which and why
            _skip_or_fail(f"no Chromium could be launched ({executable or 'Playwright default'}): "
                          f"{str(err).splitlines()[0]}")
        yield browser
        browser.close()


def _page_path(html_root: Path, notebook: Path) -> Path:
    return html_root / notebook.relative_to(ROOT).with_suffix(".html")


def _has_plots(notebook: Path) -> bool:
    """Whether the chapter draws figures (a code cell calls plt.show)."""
    return any(c["cell_type"] == "code" and "plt.show()" in source(c) for c in read_notebook(notebook)["cells"])


def test_there_are_chapters_to_check():
    assert len(CHAPTERS) >= 3, f"_toc.yml lists {len(CHAPTERS)} notebooks"


@pytest.mark.parametrize("notebook", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_page_renders_figures_and_no_errors(browser, notebook):
    path = _page_path(HTML, notebook)
    if not path.exists() or path.stat().st_mtime < notebook.stat().st_mtime:
        _skip_or_fail(f"{path.name} is {'missing' if not path.exists() else 'older than its chapter'}: "
                      "rebuild the book with `make book`")
    page = browser.new_page()
    script_errors: list[str] = []
    page.on("pageerror", lambda err: None if any(k in str(err) for k in KNOWN_SCRIPT_ERRORS)
            else script_errors.append(str(err)))
    try:
        page.goto(path.as_uri(), wait_until="load", timeout=60_000)
        images = page.evaluate(BROKEN_IMAGES_JS)
        found = {sel: page.locator(sel).count() for sel in ERROR_SELECTORS}
        outputs = page.locator(".cell_output").all_inner_texts()
    finally:
        page.close()
    assert not images["broken"], f"{path.name}: images that did not render: {images['broken']}"
    if _has_plots(notebook):
        assert images["count"] > 0, f"{path.name}: the chapter plots, but the page shows no figure"
    assert not any(found.values()), f"{path.name}: error or stderr output on the page: {found}"
    shown = [m.group(0) for text in outputs for m in [ERROR_OUTPUT.search(text)] if m]
    assert not shown, f"{path.name}: a cell's output shows {shown}"
    assert not script_errors, f"{path.name}: uncaught script errors: {script_errors}"


METHOD_CHAPTERS = [nb for nb in CHAPTERS if nb.stem[:3] in ("01_", "02_", "03_", "04_")]
REAL_MODEL = "SmolLM2-135M-Instruct"


def _text_of(output: dict) -> str:
    if "text" in output:
        return "".join(output["text"])
    return "".join("".join(v) if isinstance(v, list) else str(v)
                   for k, v in output.get("data", {}).items() if k.startswith("text/"))


def test_the_method_chapters_list_is_the_four_method_chapters():
    assert [nb.stem[:2] for nb in METHOD_CHAPTERS] == ["01", "02", "03", "04"]


@pytest.mark.parametrize("notebook", METHOD_CHAPTERS, ids=[p.stem for p in METHOD_CHAPTERS])
def test_each_method_chapter_of_the_site_ran_on_the_real_model(notebook):
    """The site a reader opens is the real model's: each method chapter's executed outputs name
    SmolLM2 and hold a figure drawn from what the chapter computed live (a cell that plots and reads no
    committed result)."""
    executed = EXECUTED / notebook.relative_to(ROOT)
    if not executed.exists() or executed.stat().st_mtime < notebook.stat().st_mtime:
        _skip_or_fail(f"{executed} is {'missing' if not executed.exists() else 'older than its chapter'}: "
                      "rebuild the book with `make book`")
    profile = BUILT_PROFILE.read_text().strip() if BUILT_PROFILE.exists() else "unknown"
    if profile != "smol":
        _skip_or_fail(f"the site was built on the {profile} profile, not smol: run `make book` "
                      "(IVEDU_PROFILE unset)")
    cells = [c for c in read_notebook(executed)["cells"] if c["cell_type"] == "code"]
    texts = [_text_of(o) for c in cells for o in c.get("outputs", [])]
    assert any(REAL_MODEL in t for t in texts), f"{notebook.stem}: no output names {REAL_MODEL}"
    live_figures = [i for i, c in enumerate(cells) if "load_result" not in source(c)
                    and any("image/png" in o.get("data", {}) for o in c.get("outputs", []))]
    assert live_figures, f"{notebook.stem}: no figure computed live on the real model"


def _solution_lines(notebook: Path) -> list[str]:
    """Distinctive lines of the chapter's solution cells (in no other cell, not imports)."""
    cells = read_notebook(notebook)["cells"]
    solutions = {ex.solution for ex in exercises_in(read_notebook(notebook))}
    other = {line.strip() for i, c in enumerate(cells) if i not in solutions for line in source(c).splitlines()}
    return [line.strip() for i in solutions for line in source(cells[i]).splitlines()
            if line.strip() and line.strip() not in other and not line.strip().startswith(("import ", "from ", "#"))
            and len(line.strip()) > 12]


def _page_text(html_root: Path, notebook: Path) -> str:
    """A built page's text with the tags stripped (Pygments wraps every code token in a span)."""
    return html.unescape(re.sub(r"<[^>]+>", "", _page_path(html_root, notebook).read_text(encoding="utf-8")))


def _site_text(site: Path) -> str:
    """Every text file of a built site (pages, downloadable sources, search index), tags stripped."""
    texts = [p.read_text(encoding="utf-8", errors="ignore") for p in site.rglob("*")
             if p.is_file() and p.suffix in (".html", ".ipynb", ".md", ".js", ".txt")]
    return html.unescape(re.sub(r"<[^>]+>", "", "\n".join(texts)))


@pytest.fixture(scope="module")
def student_site_text():
    pages = [(_page_path(STUDENT_HTML, nb), nb) for nb in CHAPTERS]
    if any(not page.exists() or page.stat().st_mtime < nb.stat().st_mtime for page, nb in pages):
        _skip_or_fail(f"the student site ({STUDENT_HTML}) is missing or older than a chapter: run `make student`")
    return _site_text(STUDENT_HTML)


@pytest.mark.parametrize("notebook", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_student_site_has_no_solution_code(notebook, student_site_text):
    lines = _solution_lines(notebook)
    if lines and HTML.joinpath("index.html").exists():
        # The main site hides the same code behind a toggle: the search below must find it there.
        assert any(line in _page_text(HTML, notebook) for line in lines), "solution lines not found on the main site"
    leaked = [line for line in lines if line in student_site_text]
    assert not leaked, f"the student site shows {notebook.stem}'s solution code: {leaked[:3]}"
