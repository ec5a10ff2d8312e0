"""Instruction vectors: built from the heads' projections, added where asked, and they carry the task."""

import pytest
import torch

from ivedu.architectures import model_layout, project_heads
from ivedu.extraction import clean_prompts, corrupted_prompts
from ivedu.evaluation import exact_match
from ivedu.generation import encode_batch, last_token_logits, last_token_logits_each, prefix_cache
from ivedu.hooks import add_to_residual
from ivedu.intervention import (Steering, instruction_vector, random_vector_like, steered_answers,
                                steered_answers_each, steered_exact_match, steered_first_token_accuracy,
                                steered_first_token_hits, steered_first_token_hits_each)
from ivedu.prompts import TINY_FORMAT
from ivedu.study import ModelUnderStudy

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
    lm = ModelUnderStudy(*tiny, FMT)
    bare = corrupted_prompts(world.task("first"), "test", n=12, fmt=FMT)
    zero = torch.zeros(128)
    for site in ("layer", "attention"):
        steering = Steering(1, 1.0, site)
        assert steered_first_token_accuracy(lm, bare.prompts, bare.answers, zero, steering) == \
            steered_first_token_accuracy(lm, bare.prompts, bare.answers, None, None)
        assert steered_exact_match(lm, bare.prompts, bare.answers, zero, steering) == \
            steered_exact_match(lm, bare.prompts, bare.answers, None, None)


def test_steered_answers_are_what_the_exact_match_scores(tiny, world):
    lm = ModelUnderStudy(*tiny, FMT)
    bare = corrupted_prompts(world.task("sentiment"), "test", n=None, fmt=FMT)
    vector = random_vector_like(torch.ones(128), seed=1) * 4
    steering = Steering(1, 2.0, "attention")
    for vec in (None, vector):
        answers = steered_answers(lm, bare.prompts, bare.answers, vec, steering)
        assert len(answers) == len(bare.prompts) and all(isinstance(a, str) for a in answers)
        assert steered_exact_match(lm, bare.prompts, bare.answers, vec, steering) == \
            sum(exact_match(answers, bare.answers)) / len(answers)
        hits = steered_first_token_hits(lm, bare.prompts, bare.answers, vec, steering)
        assert sum(hits) / len(hits) == steered_first_token_accuracy(lm, bare.prompts, bare.answers, vec,
                                                                     steering)
    assert steered_answers(lm, bare.prompts, bare.answers, vector, steering) != \
        steered_answers(lm, bare.prompts, bare.answers, None, None), "the vector changes some answer"
    with pytest.raises(ValueError, match="no prompts"):
        steered_answers(lm, [], [], None, None)
    with pytest.raises(ValueError, match="needs a Steering"):
        steered_answers(lm, bare.prompts, bare.answers, vector, None)


def _steers(width: int, site: str) -> list:
    """A sweep's worth of (vector, Steering) pairs: no vector, and random vectors of growing norm at every layer."""
    vectors = [random_vector_like(torch.ones(width), seed=s) * norm for s, norm in ((1, 4.0), (2, 16.0))]
    return [(None, None)] + [(v, Steering(layer, scale, site)) for v in vectors for layer in range(4)
                             for scale in (0.5, 2.0)]


@pytest.mark.parametrize("site", ["attention", "layer"])
def test_steerings_from_one_cached_prefix_equal_each_steering_alone(tiny, world, site):
    lm = ModelUnderStudy(*tiny, FMT)
    bare = clean_prompts(world.task("plural"), "test", n=40, fmt=FMT)  # instructed: the steerings break some
    steers = _steers(128, site)
    alone = [steered_first_token_hits(lm, bare.prompts, bare.answers, v, steering) for v, steering in steers]
    assert steered_first_token_hits_each(lm, bare.prompts, bare.answers, steers) == alone
    assert len({tuple(h) for h in alone}) > 2, "the steerings differ from one another"
    for on_generated in (False, True):
        alone = [steered_answers(lm, bare.prompts, bare.answers, v, steering, on_generated)
                 for v, steering in steers]
        assert steered_answers_each(lm, bare.prompts, bare.answers, steers, on_generated) == alone
    everywhere = [(steers[1][0], Steering(0, 1.0, site, positions="all"))]
    with pytest.raises(ValueError, match="last prompt token only"):
        steered_first_token_hits_each(lm, bare.prompts, bare.answers, everywhere)


def test_last_token_logits_from_a_cached_prefix_are_the_whole_passes(tiny, world):
    model, tok = tiny
    prompts = list(corrupted_prompts(world.task("first"), "test", n=20, fmt=FMT).prompts)
    vector = random_vector_like(torch.ones(128), seed=5) * 4

    def steer():
        return add_to_residual(model, 2, vector, positions="last", scale=1.0)

    with steer():
        steered = last_token_logits(model, tok, prompts)
    plain = last_token_logits(model, tok, prompts)
    each = last_token_logits_each(model, tok, prompts, [steer, lambda: torch.no_grad()], batch_size=8)
    torch.testing.assert_close(each[0], steered, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(each[1], plain, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(each[0], each[1])
    one_token = encode_batch(tok, [[5], [6]])
    assert prefix_cache(model, one_token) is None, "no prefix to keep: the whole pass runs per steering"
