"""Chapter 4's control sequence: ``python -m ivedu.experiments guided_half_known --seeds 3 --json``.

The main experiment (:mod:`ivedu.experiments.guided`) trains on chapter 1's sequence, whose
tasks the original tiny model cannot do at all (``first_french`` and ``middle``: exact match 0
under their instruction), so their "instruction vectors" carry no task. The method assumes the
opposite -- a base model that already half-knows each new task, as a 7B chat model half-knows
a SuperNI task. This experiment asks whether the vector starts to matter when that holds: the
same code and settings on ``last_french -> last_plural -> first_twice``, which the original
model half-does under their instruction (it composes "the last item" with a skill it has), for
the four methods the criterion compares (no ablation).

``summary`` has the same fields as the main experiment's; ``before_new_tasks`` gives the
original model's exact match on each sequence task, under its instruction, before training.
"""

from __future__ import annotations

from ivedu.experiments import guided

SEQUENCE = ["last_french", "last_plural", "first_twice"]
METHOD_NAMES = ("plain_lora", "kl", "iv_guided", "random_vector")
SETTINGS: dict = {**guided.SETTINGS, "sequence": SEQUENCE}


def run(seeds: list[int], settings: dict = SETTINGS, progress: bool | None = None) -> dict:
    """:func:`ivedu.experiments.guided.run` on the half-known sequence, the criterion's four methods."""
    result = guided.run(seeds, settings, names=METHOD_NAMES, ablation=False, progress=progress)
    first = result["per_seed"][0]
    result["before_new_tasks"] = dict(zip(first["tasks"], first["baseline"]))
    return result
