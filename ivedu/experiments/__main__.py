"""Command line: ``python -m ivedu.experiments NAME [--profile P] [--seeds N] [--json] [--save]``."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from ivedu.experiments import EXPERIMENTS, experiment
from ivedu.settings import PROFILES, settings

RESULTS = Path("results")


def versions() -> dict[str, str]:
    """The versions that made a result: ivedu, Python, torch, transformers, peft."""
    import peft
    import torch
    import transformers

    import ivedu

    return {"ivedu": ivedu.__version__, "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "peft": peft.__version__}


def save(result: dict, path: Path) -> None:
    """Write ``result`` as JSON to ``path`` atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    os.replace(f.name, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ivedu.experiments",
                                     description="Re-run a chapter's experiment over several seeds.")
    parser.add_argument("name", choices=sorted(EXPERIMENTS), help="which chapter's experiment")
    parser.add_argument("--profile", choices=PROFILES, default="tiny", help="model and sizes (default: tiny)")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ..., N-1)")
    parser.add_argument("--json", action="store_true", help="print the whole result as one JSON object")
    parser.add_argument("--save", action="store_true", help="also write it to results/<profile>/<name>.json")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    chosen = settings(EXPERIMENTS[args.name][1], args.profile)
    start = time.perf_counter()
    result = experiment(args.name)(chosen, list(range(args.seeds)), progress=sys.stderr.isatty())
    result.update(profile=args.profile, seconds=round(time.perf_counter() - start, 1), seeds=args.seeds,
                  settings=chosen.as_dict(), versions=versions())
    if args.save:
        save(result, RESULTS / args.profile / f"{args.name}.json")
    print(json.dumps(result) if args.json else json.dumps(result["summary"], indent=2))


if __name__ == "__main__":
    main()
