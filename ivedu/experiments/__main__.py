"""Command line: ``python -m ivedu.experiments NAME [--profile P] [--seeds N] [--json] [--save] [--progress]
[--resume]``."""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import time

from ivedu.experiments import EXPERIMENTS, experiment
from ivedu.experiments.checkpoints import Checkpoints
from ivedu.results import result_path, save_result, today, versions
from ivedu.settings import PROFILES, settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ivedu.experiments",
                                     description="Re-run a chapter's experiment over several seeds.")
    parser.add_argument("name", choices=sorted(EXPERIMENTS), help="which chapter's experiment")
    parser.add_argument("--profile", choices=PROFILES, default="tiny", help="model and sizes (default: tiny)")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ..., N-1)")
    parser.add_argument("--json", action="store_true", help="print the whole result as one JSON object")
    parser.add_argument("--save", action="store_true", help="also write it to results/<profile>/<name>.json")
    parser.add_argument("--progress", action="store_true",
                        help="print progress lines on stderr (the default when stderr is a terminal)")
    parser.add_argument("--resume", action="store_true",
                        help="keep each finished run in the cache and reuse those an earlier, stopped run of the "
                             "same settings kept (commands that train for hours: guided, dynamics)")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    chosen = settings(EXPERIMENTS[args.name][1], args.profile)
    run = experiment(args.name)
    extra = {}
    if args.resume:
        if "checkpoints" not in inspect.signature(run).parameters:
            parser.error(f"{args.name} cannot resume: run it without --resume")
        extra["checkpoints"] = Checkpoints.for_run(args.name, chosen)
    start = time.perf_counter()
    result = run(chosen, list(range(args.seeds)), progress=args.progress or sys.stderr.isatty(), **extra)
    result.update(profile=args.profile, seconds=round(time.perf_counter() - start, 1), seeds=args.seeds,
                  settings=chosen.as_dict(), versions=versions(), date=today())
    if args.save:
        print(f"saved {save_result(result, result_path(args.profile, args.name))}", file=sys.stderr)
    print(json.dumps(result) if args.json else json.dumps(result["summary"], indent=2))


if __name__ == "__main__":
    main()
