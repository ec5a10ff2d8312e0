"""The provenance line that ends every chapter."""

import pytest
import torch
import transformers

import ivedu
from ivedu.provenance import provenance


def test_provenance_names_versions_profile_and_model(monkeypatch):
    monkeypatch.delenv("IVEDU_PROFILE", raising=False)
    line = provenance("tiny")
    for part in (f"ivedu {ivedu.__version__}", f"torch {torch.__version__}",
                 f"transformers {transformers.__version__}", "profile tiny", "model tiny"):
        assert part in line
    assert "\n" not in line


def test_provenance_reads_the_profile_from_the_environment(monkeypatch):
    monkeypatch.setenv("IVEDU_PROFILE", "colab")
    assert "profile colab" in provenance("Qwen/Qwen2.5-0.5B-Instruct")
    assert "profile paper" in provenance("x", profile="paper")


def test_provenance_refuses_an_unknown_profile():
    with pytest.raises(ValueError, match="unknown profile 'laptop'"):
        provenance("tiny", profile="laptop")


def test_provenance_names_the_model_a_short_name_stands_for():
    assert "model smol (SmolLM2-135M-Instruct)" in provenance("smol", profile="smol")
    assert "model Qwen/Qwen2.5-0.5B-Instruct ·" not in provenance("Qwen/Qwen2.5-0.5B-Instruct", profile="colab")
    assert provenance("Qwen/Qwen2.5-0.5B-Instruct", profile="colab").endswith("model Qwen/Qwen2.5-0.5B-Instruct")
