"""A long run's state part-way, kept on disk so that a stopped run resumes inside a piece.

:mod:`ivedu.experiments.checkpoints` keeps each finished piece of a reproduction command (a
seed of ``dynamics``, a (seed, method) run of ``guided``). On a 2-core CPU one piece of a real
model can outlast a session; :class:`PartialPiece` keeps what a piece has done so far (e.g. a
dynamics seed after each stage of its sequence), so a stop loses one stage, not the piece.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from ivedu.results import save_result


@dataclass(frozen=True)
class PartState:
    """What a piece kept part-way: its JSON ``data``, a ``model``'s weights and named ``tensors``."""

    data: dict
    model: nn.Module
    tensors: dict[str, torch.Tensor]


class PartialPiece:
    """One piece's state part-way (e.g. a dynamics seed after each stage of its sequence), so
    that a run stopped inside a piece loses one stage, not the piece: a JSON ``state.json``
    naming the model weights and the other tensors (safetensors, no pickle) written before it. Every file
    is written under a temporary name and renamed; ``state.json`` last, so a run stopped while
    saving resumes from the state before."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def load(self, template: nn.Module) -> PartState | None:
        """The kept state, its weights loaded into a copy of ``template`` (the same
        architecture), or ``None`` when nothing is kept."""
        state = self.folder / "state.json"
        if not state.exists():
            return None
        kept = json.loads(state.read_text())
        model = copy.deepcopy(template)
        load_model(model, str(self.folder / kept["model"]))
        return PartState(kept["data"], model, load_file(str(self.folder / kept["tensors"])))

    def save(self, data: dict, model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
        """Keep ``data`` (JSON), ``model``'s weights and ``tensors`` as the newest state."""
        self.folder.mkdir(parents=True, exist_ok=True)
        state = self.folder / "state.json"
        n = json.loads(state.read_text())["n"] + 1 if state.exists() else 0
        names = {"model": f"model-{n}.safetensors", "tensors": f"tensors-{n}.safetensors"}
        save_model(model, str(self.folder / "model.tmp"))
        os.replace(self.folder / "model.tmp", self.folder / names["model"])
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(self.folder / "tensors.tmp"))
        os.replace(self.folder / "tensors.tmp", self.folder / names["tensors"])
        save_result({"n": n, **names, "data": data}, state)
        for old in self.folder.iterdir():
            if old.name not in {"state.json", *names.values()}:
                old.unlink()

    def clear(self) -> None:
        """Forget the state (the piece is finished and kept whole)."""
        shutil.rmtree(self.folder, ignore_errors=True)
