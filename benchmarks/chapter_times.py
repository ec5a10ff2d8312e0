"""Each chapter's run time on a profile, measured by executing it top to bottom.

    python benchmarks/chapter_times.py --profile smol                 # every chapter
    python benchmarks/chapter_times.py --profile smol 01 02           # chapters 1 and 2

Executes each notebook of ``book/`` with ``IVEDU_PROFILE`` set, as ``nbmake`` and the book
build do, and records its wall time, the machine and the date in
``results/<profile>/chapter_times.json`` (entries of other chapters are kept). Each chapter's
set-up cell prints these times (:func:`ivedu.results.run_times`). A chapter that fails is
reported and not recorded. Run it alone: another job on the same cores slows it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
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


def run_chapter(path: Path, profile: str, timeout: int) -> float:
    """Execute the notebook at ``path`` on ``profile``; its wall time in seconds."""
    nb = nbformat.read(path, as_version=4)
    os.environ["IVEDU_PROFILE"] = profile
    start = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(BOOK)}}).execute()
    return time.perf_counter() - start


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
            seconds = run_chapter(path, args.profile, args.timeout)
        except Exception as error:  # a failing chapter is reported, the others still run
            print(f"{path.name}: FAILED ({type(error).__name__}: {str(error)[:300]})", file=sys.stderr)
            failed.append(path.name)
            continue
        print(f"{path.name}: {seconds:.0f} s on {args.profile}", flush=True)
        # Re-read before each write: entries for the other chapters are kept as they are.
        times = load_result(args.profile, CHAPTER_TIMES) or {"profile": args.profile, "chapters": {}}
        times["chapters"][chapter] = {"seconds": round(seconds, 1), "machine": machine(), "date": today(),
                                      "versions": versions()}
        save_result(times, result_path(args.profile, CHAPTER_TIMES))
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
