"""Each chapter's run time on a profile, measured by executing it top to bottom.

    python benchmarks/chapter_times.py --profile smol                 # every chapter
    python benchmarks/chapter_times.py --profile smol 01 02           # chapters 1 and 2

Executes each notebook of ``book/`` with ``IVEDU_PROFILE`` set, as ``nbmake`` and the book
build do, and records its wall time, the machine and the date in
``results/<profile>/chapter_times.json`` (entries of other chapters are kept), with its five
slowest cells. Each chapter's
set-up cell prints these times (:func:`ivedu.results.run_times`). A chapter that fails is
reported and not recorded. Run it alone: another job on the same cores slows it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime
from pathlib import Path

import nbformat
import torch
from nbclient import NotebookClient

from ivedu.results import CHAPTER_TIMES, load_result, result_path, save_result, today, versions
from ivedu.settings import PROFILES

BOOK = Path(__file__).resolve().parents[1] / "book"


def machine() -> str:
    """The machine in a few words: the GPU, or the CPU's core count and torch's threads."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{os.cpu_count()}-core CPU, {torch.get_num_threads()} torch threads"


def slowest_cells(nb, n: int = 5) -> list[dict]:
    """The ``n`` code cells that took longest (index, seconds, first line), from the execution
    timestamps nbclient records: where to look first when a chapter runs over its budget."""
    cells = []
    for index, cell in enumerate(nb.cells):
        stamps = cell.get("metadata", {}).get("execution", {})
        if cell.cell_type == "code" and "iopub.execute_input" in stamps and "shell.execute_reply" in stamps:
            began, ended = (datetime.fromisoformat(stamps[k].replace("Z", "+00:00"))
                            for k in ("iopub.execute_input", "shell.execute_reply"))
            first = next((line for line in cell.source.splitlines() if line and not line.startswith("#")), "")
            cells.append({"cell": index, "seconds": round((ended - began).total_seconds(), 1), "code": first[:80]})
    return sorted(cells, key=lambda c: -c["seconds"])[:n]


def run_chapter(path: Path, profile: str, timeout: int) -> tuple[float, list[dict]]:
    """Execute the notebook at ``path`` on ``profile``: its wall time in seconds and its slowest cells."""
    nb = nbformat.read(path, as_version=4)
    os.environ["IVEDU_PROFILE"] = profile
    start = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=True,
                   resources={"metadata": {"path": str(BOOK)}}).execute()
    return time.perf_counter() - start, slowest_cells(nb)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chapters", nargs="*", help="chapter numbers (00 .. 05); default: every chapter")
    parser.add_argument("--profile", choices=PROFILES, default="tiny")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell before giving up")
    args = parser.parse_args(argv)
    paths = sorted(p for p in BOOK.glob("[0-9][0-9]_*.ipynb") if not args.chapters or p.name[:2] in args.chapters)
    if not paths:
        parser.error(f"no chapter matches {args.chapters}; the chapters are {sorted(p.name[:2] for p in BOOK.glob('[0-9][0-9]_*.ipynb'))}")
    failed = []
    for path in paths:
        chapter = f"ch{int(path.name[:2])}"
        try:
            seconds, slowest = run_chapter(path, args.profile, args.timeout)
        except Exception as error:  # a failing chapter is reported, the others still run
            print(f"{path.name}: FAILED ({type(error).__name__}: {str(error)[:300]})", file=sys.stderr)
            failed.append(path.name)
            continue
        print(f"{path.name}: {seconds:.0f} s on {args.profile}; slowest cells: "
              + "; ".join(f"[{c['cell']}] {c['seconds']:.0f} s {c['code']}" for c in slowest), flush=True)
        # Re-read before each write: entries for the other chapters are kept as they are.
        times = load_result(args.profile, CHAPTER_TIMES) or {"profile": args.profile, "chapters": {}}
        times["chapters"][chapter] = {"seconds": round(seconds, 1), "machine": machine(), "date": today(),
                                      "versions": versions(), "slowest_cells": slowest}
        save_result(times, result_path(args.profile, CHAPTER_TIMES))
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
