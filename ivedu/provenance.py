"""The line every chapter ends with: which code and which model made its numbers."""

from __future__ import annotations

import platform

import torch
import transformers

import ivedu


def provenance(model_name: str, profile: str = "tiny") -> str:
    """ivedu, torch and transformers versions, Python, device, profile and model, in one line."""
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    return (f"ivedu {ivedu.__version__} · torch {torch.__version__} · transformers {transformers.__version__} · "
            f"Python {platform.python_version()} · {device} · profile {profile} · model {model_name}")
