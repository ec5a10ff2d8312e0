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
from typing import Any

# The results folder of a source checkout (``ivedu/`` sits beside it); ``$IVEDU_RESULTS`` overrides.
RESULTS_DIR = Path(os.environ.get("IVEDU_RESULTS", Path(__file__).resolve().parents[1] / "results"))
CHAPTER_TIMES = "chapter_times"


def result_path(profile: str, name: str, root: Path | None = None) -> Path:
    """Where the result ``name`` of ``profile`` lives: ``<root>/<profile>/<name>.json``."""
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


def stale_settings(result: dict, current: dict) -> list[str]:
    """The settings (``step.field``) whose value in ``result`` differs from ``current``
    (:meth:`ivedu.settings.Settings.as_dict` of what the code runs today); empty when the
    result is up to date. Both are compared as JSON, so tuples and lists are equal."""
    saved, now = _flat(json.loads(json.dumps(result.get("settings", {})))), _flat(json.loads(json.dumps(current)))
    return sorted(k for k in saved.keys() | now.keys() if k != "chapter" and saved.get(k, "<missing>") != now.get(k, "<missing>"))


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else key))
    return out


def format_seconds(seconds: float) -> str:
    """``"45 s"`` below two minutes, ``"7.5 min"`` above."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def run_times(chapter: str, profiles: tuple[str, ...] = ("tiny", "smol", "colab", "paper"),
              root: Path | None = None) -> str:
    """One line: the measured run time of ``chapter`` on each profile and the machine it ran
    on, from ``results/<profile>/chapter_times.json`` ("not measured" where there is none)."""
    folder = Path(root or RESULTS_DIR)
    if not folder.is_dir():
        return f"run time of this chapter: see the book's page (no results folder at {folder})"
    parts = []
    for profile in profiles:
        entry = ((load_result(profile, CHAPTER_TIMES, root) or {}).get("chapters") or {}).get(chapter)
        parts.append(f"{profile} {format_seconds(entry['seconds'])} ({entry['machine']})" if entry
                     else f"{profile} not measured")
    return "run time of this chapter: " + ", ".join(parts)
