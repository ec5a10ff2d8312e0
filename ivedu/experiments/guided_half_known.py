"""Chapter 4's control sequence: ``python -m ivedu.experiments guided_half_known --seeds 3 --json``.

The main experiment (:mod:`ivedu.experiments.guided`) trains on chapter 1's sequence, whose
tasks the original tiny model cannot do at all (``first_french`` and ``middle``: exact match 0
under their instruction), so their "instruction vectors" carry no task. The method assumes the
opposite -- a base model that already half-knows each new task, as a 7B chat model half-knows
a SuperNI task. This experiment asks whether the vector starts to matter when that holds: the
same code and settings on ``settings.data.control_sequence`` (tiny: ``last_french ->
last_plural -> first_twice``, which the original model half-does under their instruction: it
composes "the last item" with a skill it has), for the four methods the criterion compares (no
ablation).

``summary`` has the same fields as the main experiment's; ``before_new_tasks`` gives the
original model's exact match on each sequence task, under its instruction, before training.
"""

from __future__ import annotations

from ivedu.experiments.guided import compare
from ivedu.settings import FINDING_METHODS, Settings


def reads(settings: Settings) -> tuple[str, ...]:
    """The control sequence, and what the guided command reads besides its sequence."""
    return ("data.control_sequence", "finetune", "extraction.clean_style", "extraction.corrupted_style", "guided")


def run(settings: Settings, seeds: list[int], progress: bool = False) -> dict:
    """:func:`ivedu.experiments.guided.compare` on the control sequence, the criterion's four methods."""
    if not settings.data.control_sequence:
        raise ValueError(f"the {settings.profile} profile has no control sequence (settings.data.control_sequence)")
    result = compare(settings, seeds, settings.data.control_sequence, FINDING_METHODS, ablation=False, progress=progress)
    first = result["per_seed"][0]
    result["before_new_tasks"] = dict(zip(first["tasks"], first["baseline"]))
    return result
