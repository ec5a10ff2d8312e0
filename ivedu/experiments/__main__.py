"""Command line: ``python -m ivedu.experiments NAME [--seeds N] [--json]``."""

from __future__ import annotations

import argparse
import json
import time

from ivedu.experiments import EXPERIMENTS, experiment


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ivedu.experiments",
                                     description="Re-run a chapter's experiment over several seeds.")
    parser.add_argument("name", choices=sorted(EXPERIMENTS), help="which chapter's experiment")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ..., N-1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    start = time.perf_counter()
    result = experiment(args.name)(list(range(args.seeds)))
    result["seconds"] = round(time.perf_counter() - start, 1)
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result["summary"], indent=2))


if __name__ == "__main__":
    main()
