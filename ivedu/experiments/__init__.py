"""Reproduction commands: ``python -m ivedu.experiments NAME --seeds 3 --json``.

Each experiment is a module in this package with a function
``run(seeds: list[int]) -> dict`` that runs the same ``ivedu`` code as its chapter, once per
seed, and returns a JSON-ready dict with at least ``summary`` (means over seeds) and
``per_seed``. The registry maps the command-line name to the module.
"""

from __future__ import annotations

import importlib
from typing import Callable

EXPERIMENTS: dict[str, str] = {
    "diagnosis": "ivedu.experiments.diagnosis",    # chapter 1
    "extraction": "ivedu.experiments.extraction",  # chapter 2
    "dynamics": "ivedu.experiments.dynamics",      # chapter 3
    "guided": "ivedu.experiments.guided",          # chapter 4
    "guided_half_known": "ivedu.experiments.guided_half_known",  # chapter 4, the control sequence
    "model_draws": "ivedu.experiments.model_draws",  # chapters 1-2 on tiny models trained with other seeds
}


def experiment(name: str) -> Callable[[list[int]], dict]:
    """The ``run`` function of the experiment called ``name``."""
    if name not in EXPERIMENTS:
        raise SystemExit(f"unknown experiment {name!r}; choose one of {sorted(EXPERIMENTS)}")
    return importlib.import_module(EXPERIMENTS[name]).run
