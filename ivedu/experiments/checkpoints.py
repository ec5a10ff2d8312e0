"""Finished pieces of a long reproduction command, kept so that a stopped run can resume.

On a CPU one seed of chapter 4's comparison on a real model takes most of an hour; a session,
a laptop lid or a Colab runtime can end first. With ``--resume`` the command keeps every
finished piece (a (seed, method) run of ``guided``, a seed of ``dynamics``) as one JSON file
and, run again, reuses those instead of training them anew. The folder is named after a hash of the settings the command reads and the library
versions, so a run is reused only by a command that would have made it the same way; after
changing the code itself, delete the folder (the command prints it). Each file is written
atomically: a run stopped while writing leaves no half file behind.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, TypeVar

from ivedu.resume import PartialPiece
from ivedu.results import save_result, settings_that_count, versions
from ivedu.runtime import cache_home
from ivedu.settings import Settings


def default_root() -> Path:
    """``$IVEDU_CACHE/runs``, or ``~/.cache/ivedu/runs``."""
    return cache_home() / "runs"


class Checkpoints:
    """One JSON file per finished piece (``key``: e.g. ``"seed1-iv_guided"``) in ``folder``."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.reused: list[str] = []

    @classmethod
    def for_run(cls, name: str, settings: Settings, root: Path | None = None) -> "Checkpoints":
        """The checkpoints of experiment ``name`` under ``settings`` (with this machine's versions)."""
        from ivedu.experiments import settings_read

        counted = settings_that_count(settings.as_dict(), settings_read(name, settings))
        key = json.dumps({"settings": counted, "versions": versions()}, sort_keys=True)
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        return cls(Path(root or default_root()) / f"{name}-{settings.profile}-{digest}")

    def partial(self, key: str) -> "PartialPiece":
        """Where piece ``key`` keeps its state part-way (:class:`ivedu.resume.PartialPiece`)."""
        return PartialPiece(self.folder / f"{key}-partial")

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def get(self, key: str) -> dict | None:
        """The piece ``key`` if a run finished it before, else ``None``."""
        path = self._path(key)
        if not path.exists():
            return None
        with open(path) as f:
            value = json.load(f)
        self.reused.append(key)
        return value

    def put(self, key: str, value: dict) -> None:
        """Keep the finished piece ``key``."""
        save_result(value, self._path(key))


Piece = TypeVar("Piece")


def kept_or_made(checkpoints: Checkpoints | None, key: str, make: Callable[[], Piece],
                 as_dict: Callable[[Piece], dict], from_dict: Callable[[dict], Piece]) -> Piece:
    """The piece ``key`` an earlier run kept (read back with ``from_dict``), or else ``make()``'s,
    kept now (written with ``as_dict``); without ``checkpoints``, ``make()``'s alone."""
    if checkpoints is None:
        return make()
    kept = checkpoints.get(key)
    if kept is not None:
        return from_dict(kept)
    made = make()
    checkpoints.put(key, as_dict(made))
    checkpoints.partial(key).clear()
    return made
