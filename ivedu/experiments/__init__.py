"""Reproduction commands: ``python -m ivedu.experiments NAME --profile P --seeds 3 --json``.

Each experiment is a short script in this package: load the profile's model and tasks, loop
over seeds, call the step modules (the same functions its chapter calls), and turn their
results into JSON. Its ``run(settings, seeds, progress)`` returns a JSON-ready dict with at
least ``summary`` (means over seeds) and ``per_seed``; the command line adds the settings,
the library versions and the wall time, and prints or saves it (``results/<profile>/``).
Chapters never import this package: it is the command line, not a library.
"""

from __future__ import annotations

import importlib
from typing import Callable

from ivedu.settings import Settings
from ivedu.study import STUDY_READS

# name -> (module, the chapter whose settings it runs with)
EXPERIMENTS: dict[str, tuple[str, str]] = {
    "diagnosis": ("ivedu.experiments.diagnosis", "ch1"),
    "extraction": ("ivedu.experiments.extraction", "ch2"),
    "dynamics": ("ivedu.experiments.dynamics", "ch3"),
    "guided": ("ivedu.experiments.guided", "ch4"),
    "guided_half_known": ("ivedu.experiments.guided_half_known", "ch4"),  # chapter 4's control sequence
    "model_draws": ("ivedu.experiments.model_draws", "ch1"),  # chapters 1-2 on tiny models trained with other seeds
    "task_survey": ("ivedu.experiments.task_survey", "ch0"),  # which tasks the model does under its instruction
}


def settings_read(name: str, settings: Settings) -> tuple[str, ...]:
    """The settings (names or dotted prefixes) that experiment ``name`` reads when it runs with
    ``settings``: its module's ``reads(settings)`` and :data:`ivedu.study.STUDY_READS` (the model,
    and which examples of which tasks it scores). A committed result is stale only where these
    differ (:func:`ivedu.results.stale_settings`)."""
    if name not in EXPERIMENTS:
        raise SystemExit(f"unknown experiment {name!r}; choose one of {sorted(EXPERIMENTS)}")
    return STUDY_READS + tuple(importlib.import_module(EXPERIMENTS[name][0]).reads(settings))


def experiment(name: str) -> Callable[..., dict]:
    """The ``run(settings, seeds, progress=False)`` function of the experiment called ``name``."""
    if name not in EXPERIMENTS:
        raise SystemExit(f"unknown experiment {name!r}; choose one of {sorted(EXPERIMENTS)}")
    return importlib.import_module(EXPERIMENTS[name][0]).run
