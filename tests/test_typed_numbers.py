"""No number is typed by hand in the chapters' prose: it is glued from a run or a committed result.

A decimal number in a markdown cell goes stale the day the model, the data or the code
changes. The chapters state numbers with myst-nb's ``{glue:text}`` (from the chapter's own run
or from ``results/``) or render them in a code cell. Not counted: glued values, quotations
(``>`` lines, for figures quoted from papers with their source), inline code, math (a
definition's constants), exercise labels ("exercise 2.3") and sizes with a unit ("1.1M",
"0.5B", "1.5x").
"""

import json
import re
from pathlib import Path

import pytest

BOOK = Path(__file__).resolve().parents[1] / "book"
NUMBER = re.compile(r"(?<![\w.{$\\])[-\u2212]?\d*\.\d+(?![\w.]*[A-Za-z×])")


def prose(markdown: str) -> str:
    """The markdown without what may hold a number: glue, quotations, code, math, exercise labels."""
    text = re.sub(r"\{glue(:\w+)?\}`[^`]*`", "", markdown)
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith(">"))
    # A fence line (```{admonition} ...) opens prose that counts; drop the marker and its options only.
    text = "\n".join(line for line in text.splitlines() if not re.match(r"\s*(```|~~~|:\w+:)", line))
    text = re.sub(r"`[^`\n]*`", "", text)
    text = re.sub(r"\$\$.*?\$\$", "", text, flags=re.S)
    text = re.sub(r"\$[^$\n]*\$", "", text)
    return re.sub(r"(?i)(exercises?|\{exercise\})\s+\d+\.\d+(\s*(-|to|and)\s*\d+\.\d+)?", "", text)


def typed_numbers(path: Path) -> list[str]:
    """Each decimal number typed in the notebook's markdown cells, with a little context."""
    found = []
    for cell in json.loads(path.read_text())["cells"]:
        if cell["cell_type"] == "markdown":
            text = prose("".join(cell["source"]))
            found += [text[max(0, m.start() - 40):m.end() + 10].replace("\n", " ") for m in NUMBER.finditer(text)]
    return found


@pytest.mark.parametrize("path", sorted(BOOK.glob("*.ipynb")), ids=lambda p: p.stem)
def test_no_decimal_number_is_typed_in_a_chapters_prose(path):
    assert typed_numbers(path) == [], f"{path.name}: glue these from the run or from results/ instead"


def test_the_rule_counts_what_it_should():
    text = ("GP 0.12 for plain LoRA, {glue:text}`ch4_gp:.2f` glued, `0.5` code, $\\alpha = 0.1$, exercises 1.1-1.3, "
            "a 1.1M model, 0.5B and 1.5x faster\n> quoted 0.873 (Jiang et al.)\nand -0.05.\n"
            "````{admonition} Paper\n:class: note\nit gains 0.37 here\n````")
    assert NUMBER.findall(prose(text)) == ["0.12", "-0.05", "0.37"]
