"""The line every chapter ends with: which code, which profile and which model made its numbers."""

from __future__ import annotations

import platform

import torch
import transformers

import ivedu
from ivedu.settings import PROFILES, profile_from_env


def provenance(model_name: str, profile: str | None = None) -> str:
    """ivedu, torch and transformers versions, Python, device, profile and model, in one line.

    ``profile``: the profile the chapter ran under (one of :data:`ivedu.settings.PROFILES`); ``None``
    reads ``$IVEDU_PROFILE`` (default ``tiny``), as the chapters' settings do.
    """
    profile = profile or profile_from_env()
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {PROFILES}")
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    return (f"ivedu {ivedu.__version__} · torch {torch.__version__} · transformers {transformers.__version__} · "
            f"Python {platform.python_version()} · {device} · profile {profile} · model {model_name}")
