"""The line every chapter ends with: which code, which profile and which model made its numbers."""

from __future__ import annotations

import platform

import torch
import transformers

import ivedu
from ivedu.settings import PROFILES, profile_from_env

# The models the short names of ``load_model`` stand for, so that the line names the real model.
MODEL_NAMES = {"tiny": "ivedu's 1.1M-parameter tiny-instruct model", "smol": "SmolLM2-135M-Instruct"}


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
            f"Python {platform.python_version()} · {device} · profile {profile} · model {named(model_name)}")


def named(model_name: str) -> str:
    """``model_name``, with the model it stands for when it is a short name (``smol`` ->
    ``smol (SmolLM2-135M-Instruct)``)."""
    return f"{model_name} ({MODEL_NAMES[model_name]})" if model_name in MODEL_NAMES else model_name
