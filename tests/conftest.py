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
