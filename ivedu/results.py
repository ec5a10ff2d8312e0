"""The measured results the book quotes: ``results/<profile>/<name>.json``.

Every reproduction command (``python -m ivedu.experiments NAME --profile P --save``) writes
one file here, and ``benchmarks/chapter_times.py`` writes each chapter's measured run time
to ``results/<profile>/chapter_times.json``. A committed file is the source of every number
the book states without computing it live, so each file carries what made it: the settings,
the versions, the wall time and the date. :func:`stale_settings` says whether a committed
result still matches what the code would run today.

Writes are atomic (a temporary file, then ``os.replace``): a reader never sees half a file.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any, Sequence

from ivedu.arguments import check_mapping, check_number, check_optional_path, check_path, check_str, check_strs

# The results folder of a source checkout (``ivedu/`` sits beside it); ``$IVEDU_RESULTS`` overrides.
RESULTS_DIR = Path(os.environ.get("IVEDU_RESULTS", Path(__file__).resolve().parents[1] / "results"))
CHAPTER_TIMES = "chapter_times"


def result_path(profile: str, name: str, root: Path | None = None) -> Path:
    """Where the result ``name`` of ``profile`` lives: ``<root>/<profile>/<name>.json``."""
    check_str("profile", profile)
    check_str("name", name)
    check_optional_path("root", root)
    return Path(root or RESULTS_DIR) / profile / f"{name}.json"


def versions() -> dict[str, str]:
    """The versions that made a result: ivedu, Python, torch, transformers, peft."""
    import peft
    import torch
    import transformers

    import ivedu

    return {"ivedu": ivedu.__version__, "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "peft": peft.__version__}


def today() -> str:
    """Today's date (UTC) as ``YYYY-MM-DD``: when a result was measured."""
    return datetime.datetime.now(datetime.timezone.utc).date().isoformat()


def save_result(result: dict, path: Path) -> Path:
    """Write ``result`` as JSON to ``path`` atomically; an earlier file stays whole if this fails."""
    check_mapping("result", result, nonempty=False)
    check_path("path", path)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as f:
        try:
            json.dump(result, f, indent=1)
            f.write("\n")
        except BaseException:
            f.close()
            os.unlink(f.name)
            raise
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(f.name, 0o666 & ~umask)  # a temporary file is private (0600); a result is not
    os.replace(f.name, path)
    return path


def load_result(profile: str, name: str, root: Path | None = None) -> dict | None:
    """The committed result ``name`` of ``profile``, or ``None`` when it has not been measured."""
    path = result_path(profile, name, root)
    if not path.exists():
        return None
    with open(path) as f:
        return json.load(f)


def stale_settings(result: dict, current: dict, reads: Sequence[str] | None = None) -> list[str]:
    """The settings (``step.field``) whose value in ``result`` differs from ``current``
    (:meth:`ivedu.settings.Settings.as_dict` of what the code runs today); empty when the
    result is up to date. Both are compared as JSON, so tuples and lists are equal.

    ``reads``: the settings the command reads, as names or dotted prefixes (``"finetune"``,
    ``"data.sequence"``; :func:`ivedu.experiments.settings_read`); a change elsewhere -- chapter
    3's restoration grid for chapter 2's command -- does not change what it runs. ``None``:
    compare everything. A setting added since the result was made and left at ``None`` (off)
    is not a difference: the result ran as the code runs today."""
    check_mapping("result", result, nonempty=False)
    check_mapping("current", current, nonempty=False)
    if reads is not None:
        check_strs("reads", reads, nonempty=False)
    saved, now = _flat(json.loads(json.dumps(result.get("settings", {})))), _flat(json.loads(json.dumps(current)))
    if not saved:
        return ["settings (none recorded)"]

    def read(key: str) -> bool:
        return _reads(key, reads)

    def differs(key: str) -> bool:
        if key not in saved:
            return now[key] is not None
        return saved[key] != now.get(key, "<missing>")

    return sorted(k for k in saved.keys() | now.keys() if k != "chapter" and read(k) and differs(k))


def settings_that_count(current: dict, reads: Sequence[str]) -> dict[str, Any]:
    """The settings of ``current`` (:meth:`ivedu.settings.Settings.as_dict`) that a command
    reading ``reads`` depends on, flat (``step.field``) and as JSON; those left at ``None`` (off)
    are dropped, as :func:`stale_settings` ignores them. Two runs with equal subsets ran alike."""
    check_mapping("current", current, nonempty=False)
    check_strs("reads", reads, nonempty=False)
    flat = _flat(json.loads(json.dumps(current)))
    return {k: v for k, v in sorted(flat.items()) if k != "chapter" and _reads(k, reads) and v is not None}


def _reads(key: str, reads: Sequence[str] | None) -> bool:
    return reads is None or any(key == r or key.startswith(r + ".") for r in reads)


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else key))
    return out


def format_seconds(seconds: float) -> str:
    """``"45 s"`` below two minutes, ``"7.5 min"`` above."""
    check_number("seconds", seconds, 0.0)
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def run_times(chapter: str, profiles: tuple[str, ...] = ("tiny", "smol", "colab", "paper"),
              root: Path | None = None) -> str:
    """One line: the measured run time of ``chapter`` on each profile and the machine it ran
    on, from ``results/<profile>/chapter_times.json`` ("not measured" where there is none)."""
    check_str("chapter", chapter)
    check_strs("profiles", profiles, unique=True)
    check_optional_path("root", root)
    folder = Path(root or RESULTS_DIR)
    if not folder.is_dir():
        return f"run time of this chapter: see the book's page (no results folder at {folder})"
    parts = []
    for profile in profiles:
        entry = ((load_result(profile, CHAPTER_TIMES, root) or {}).get("chapters") or {}).get(chapter)
        parts.append(f"{profile} {format_seconds(entry['seconds'])} ({entry['machine']})" if entry
                     else f"{profile} not measured")
    return "run time of this chapter: " + ", ".join(parts)


CHAPTER_TITLES = {"ch0": "0. Meet the models and their tasks", "ch1": "1. Diagnosing forgetting",
                  "ch2": "2. Extracting instruction vectors", "ch3": "3. Instruction-vector dynamics",
                  "ch4": "4. Instruction-vector-guided training", "ch5": "5. Scaling up"}


def chapter_times_markdown(profiles: tuple[str, ...] = ("tiny", "smol", "colab", "paper"),
                           root: Path | None = None) -> str:
    """A markdown table of every chapter's measured run time per profile (rows: chapters), from
    ``results/<profile>/chapter_times.json``, and the machine each profile was measured on:
    the teachers' page renders it, so the times it states are the committed measurements."""
    check_strs("profiles", profiles, unique=True)
    check_optional_path("root", root)
    entries = {p: ((load_result(p, CHAPTER_TIMES, root) or {}).get("chapters") or {}) for p in profiles}
    lines = ["| chapter | " + " | ".join(f"`{p}`" for p in profiles) + " |",
             "|---|" + "---|" * len(profiles)]
    for chapter, title in CHAPTER_TITLES.items():
        cells = [format_seconds(entries[p][chapter]["seconds"]) if chapter in entries[p] else "not measured"
                 for p in profiles]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    machines = sorted({f"`{p}` on a {e['machine']}" for p in profiles for e in entries[p].values()})
    note = "Measured " + "; ".join(machines) + "." if machines else "No chapter time is recorded yet."
    return "\n".join(lines) + "\n\n" + note


def glue_result(profile: str, name: str, fields: dict[str, str], prefix: str, root: Path | None = None) -> dict:
    """Glue numbers of a committed result for the chapter's text, and return them.

    ``fields`` maps a glue key to a dotted path in the result (``"r2_iv": "summary.r2_iv"``);
    each value is glued as ``<prefix>_<key>`` for myst-nb's ``{glue:text}`<prefix>_<key>:.2f```,
    so the prose quotes the committed file instead of a typed copy. Outside a book build
    (myst-nb not installed, as on Colab) nothing is glued; the values are still returned, and
    without a results folder at all (ivedu installed from a wheel) there is nothing to quote:
    ``{}``. ``FileNotFoundError`` names the command to run when one result is missing.
    """
    check_str("profile", profile)
    check_str("name", name)
    check_mapping("fields", fields, "glue key")
    check_str("prefix", prefix)
    check_optional_path("root", root)
    if not Path(root or RESULTS_DIR).is_dir():  # not a source checkout (e.g. pip-installed on Colab)
        return {}
    result = load_result(profile, name, root)
    if result is None:
        raise FileNotFoundError(f"{result_path(profile, name, root)} does not exist: run "
                                f"`python -m ivedu.experiments {name} --profile {profile} --seeds 3 --save`")
    values = {}
    for key, dotted in fields.items():
        value: Any = result
        for part in dotted.split("."):
            value = value[int(part)] if isinstance(value, list) else value[part]
        values[key] = value
    for key, value in values.items():
        glue(f"{prefix}_{key}", value)
    return values


def glue(name: str, value: Any) -> None:
    """Glue ``value`` as ``name`` for the chapter's text (myst-nb's ``{glue:text}`name:.2f```),
    without displaying it. Outside a book build -- myst-nb not installed, as on Colab -- it
    does nothing: the number is then only in the cell's printed output."""
    check_str("name", name)
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        return
    myst_glue(name, value, display=False)


def markdown_table(rows: dict[str, dict], columns: tuple[str, ...], counts: tuple[str, ...] = ("steps",),
                   label: str = "method") -> str:
    """Rows of a result as a markdown table, for a chapter cell to render from a committed file.

    One row per name, one column per key of ``columns``. A value with a ``<key>_std`` beside it
    reads ``mean ± std`` (unless the row's ``n_seeds`` is 1); keys in ``counts`` are whole
    numbers; a missing value is left blank.
    """
    check_mapping("rows", rows, nonempty=False)
    check_strs("columns", columns, unique=True)
    check_strs("counts", counts, nonempty=False)
    check_str("label", label)
    def cell(row: dict, key: str) -> str:
        value = row.get(key)
        if value is None:
            return ""
        text = f"{value:.0f}" if key in counts else f"{value:.2f}"
        std = row.get(f"{key}_std") if row.get("n_seeds", 2) > 1 else None  # no spread over one seed
        return text if std is None or key in counts else f"{text} ± {std:.2f}"

    lines = [f"| {label} | " + " | ".join(c.upper() if len(c) <= 3 else c for c in columns) + " |",
             "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(cell(row, c) for c in columns) + " |" for name, row in rows.items()]
    return "\n".join(lines)
