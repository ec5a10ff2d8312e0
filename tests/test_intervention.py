"""Instruction vectors: built from the heads' projections, added where asked, and they carry the task."""

import pytest
import torch

from ivedu.architectures import model_layout, project_heads
from ivedu.extraction import corrupted_prompts
from ivedu.evaluation import exact_match
from ivedu.intervention import (instruction_vector, random_vector_like, steered_answers, steered_exact_match,
                                steered_first_token_accuracy, steered_first_token_hits)
from ivedu.prompts import TINY_FORMAT

FMT = TINY_FORMAT  # the tiny model's prompt format


def test_vector_is_the_sum_of_the_chosen_heads_projections(tiny):
    model, _ = tiny
    layout = model_layout(model)
    means = torch.randn(4, 4, 32, generator=torch.Generator().manual_seed(0))
    iv = instruction_vector(model, means, [(0, 1), (2, 3)], "t")
    with torch.no_grad():
        expected = project_heads(layout, 0, means[0])[1] + project_heads(layout, 2, means[2])[3]
        by_weight = (model.model.layers[0].self_attn.o_proj.weight[:, 32:64] @ means[0, 1]
                     + model.model.layers[2].self_attn.o_proj.weight[:, 96:128] @ means[2, 3])
    assert iv.vector.shape == (128,)
    assert torch.allclose(iv.vector, expected, atol=1e-5)
    assert torch.allclose(iv.vector, by_weight, atol=1e-5)
    assert iv.heads == ((0, 1), (2, 3))


def test_vector_errors(tiny):
    model, _ = tiny
    with pytest.raises(ValueError, match="at least one"):
        instruction_vector(model, torch.zeros(4, 4, 32), [])
    with pytest.raises(IndexError, match="this model has 4 layers"):
        instruction_vector(model, torch.zeros(4, 4, 32), [(4, 0)])


def test_random_vector_has_the_same_norm_and_is_seeded():
    v = torch.arange(8.0)
    r = random_vector_like(v, seed=3)
    assert torch.isclose(r.norm(), v.norm())
    assert torch.equal(r, random_vector_like(v, seed=3))
    assert not torch.equal(r, random_vector_like(v, seed=4))


def test_a_zero_vector_changes_nothing(tiny, world):
    model, tok = tiny
    bare = corrupted_prompts(world.task("first"), "test", n=12, fmt=FMT)
    zero = torch.zeros(128)
    for site in ("layer", "attention"):
        assert steered_first_token_accuracy(model, tok, bare.prompts, bare.answers, zero, 1, site=site) == \
            steered_first_token_accuracy(model, tok, bare.prompts, bare.answers, None, 1)
        assert steered_exact_match(model, tok, bare.prompts, bare.answers, zero, 1, site=site) == \
            steered_exact_match(model, tok, bare.prompts, bare.answers, None, 1)


def test_steered_answers_are_what_the_exact_match_scores(tiny, world):
    model, tok = tiny
    bare = corrupted_prompts(world.task("sentiment"), "test", n=None, fmt=FMT)
    vector = random_vector_like(torch.ones(128), seed=1) * 4
    for vec in (None, vector):
        answers = steered_answers(model, tok, bare.prompts, bare.answers, vec, 1, 2.0)
        assert len(answers) == len(bare.prompts) and all(isinstance(a, str) for a in answers)
        assert steered_exact_match(model, tok, bare.prompts, bare.answers, vec, 1, 2.0) == \
            sum(exact_match(answers, bare.answers)) / len(answers)
        hits = steered_first_token_hits(model, tok, bare.prompts, bare.answers, vec, 1, 2.0)
        assert sum(hits) / len(hits) == steered_first_token_accuracy(model, tok, bare.prompts, bare.answers, vec, 1, 2.0)
    assert steered_answers(model, tok, bare.prompts, bare.answers, vector, 1, 2.0) != \
        steered_answers(model, tok, bare.prompts, bare.answers, None, 1, 2.0), "the vector changes some answer"
    with pytest.raises(ValueError, match="no prompts"):
        steered_answers(model, tok, [], [], None, 1)
