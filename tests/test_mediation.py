"""Causal mediation: the fast scan equals the reference loop, on several architectures."""

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from ivedu.extraction import clean_prompts, corrupted_prompts
from ivedu.mediation import HeadScan, indirect_effects, indirect_effects_reference, mean_head_activations
from ivedu.prompts import TINY_FORMAT

FMT = TINY_FORMAT  # the tiny model's prompt format


def random_model(model_type: str, vocab_size: int):
    """A tiny randomly initialised model of ``model_type`` (two layers, four heads)."""
    torch.manual_seed(0)
    sizes = {"gpt2": dict(n_embd=32, n_layer=2, n_head=4, n_positions=128),
             "llama": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, max_position_embeddings=128)}[model_type]
    config = AutoConfig.for_model(model_type, vocab_size=vocab_size, pad_token_id=0, bos_token_id=1,
                                  eos_token_id=2, **sizes)
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.mark.parametrize("style", ["removed", "shuffled"])
def test_fast_scan_equals_reference_on_tiny_model(tiny, world, style):
    model, tok = tiny
    task = world.task("capital")
    means = mean_head_activations(model, tok, clean_prompts(task, n=6, fmt=FMT).prompts)
    corrupted = corrupted_prompts(task, style=style, n=5, fmt=FMT)  # shuffled: prompts of different lengths
    fast = indirect_effects(model, tok, corrupted.prompts, corrupted.answers, means, batch_size=7)
    reference = indirect_effects_reference(model, tok, corrupted.prompts, corrupted.answers, means)
    assert fast.shape == (5, 4, 4)
    assert torch.allclose(fast, reference, atol=1e-5)
    assert fast.abs().max() > 1e-3  # the patches really change something


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_fast_scan_equals_reference_on_random_models(tiny, world, model_type):
    _, tok = tiny
    model = random_model(model_type, len(tok))
    task = world.task("first")
    means = mean_head_activations(model, tok, clean_prompts(task, n=4, fmt=FMT).prompts)
    corrupted = corrupted_prompts(task, n=3, fmt=FMT)
    fast = indirect_effects(model, tok, corrupted.prompts, corrupted.answers, means)
    reference = indirect_effects_reference(model, tok, corrupted.prompts, corrupted.answers, means)
    assert torch.allclose(fast, reference, atol=1e-6)


def test_mean_activations_are_the_mean_of_single_prompt_activations(tiny, world):
    model, tok = tiny
    prompts = clean_prompts(world.task("plural"), n=4, fmt=FMT).prompts
    together = mean_head_activations(model, tok, prompts, batch_size=3)
    alone = torch.stack([mean_head_activations(model, tok, [p]) for p in prompts]).mean(0)
    assert together.shape == (4, 4, 32)
    assert torch.allclose(together, alone, atol=1e-5)


def test_top_heads_orders_by_effect_and_checks_k():
    effects = torch.tensor([[0.1, 0.5], [0.3, -0.2]])
    scan = HeadScan("t", effects, torch.zeros(2, 2, 3), corrupted_prob=0.0, clean_prob=1.0)
    assert scan.top_heads(3) == [(0, 1), (1, 0), (0, 0)]
    with pytest.raises(ValueError, match="between 1 and 4"):
        scan.top_heads(5)


def test_bad_inputs_get_clear_errors(tiny, world):
    model, tok = tiny
    with pytest.raises(ValueError, match="at least one clean prompt"):
        mean_head_activations(model, tok, [])
    corrupted = corrupted_prompts(world.task("capital"), n=2, fmt=FMT)
    with pytest.raises(ValueError, match=r"\[layers, heads, head_dim\] = \[4, 4, 32\]"):
        indirect_effects(model, tok, corrupted.prompts, corrupted.answers, torch.zeros(3, 4, 32))
    with pytest.raises(ValueError, match="one answer per prompt"):
        indirect_effects(model, tok, corrupted.prompts, corrupted.answers[:1], torch.zeros(4, 4, 32))


def test_neutral_corruption_keeps_the_format_and_names_no_task(tiny, world):
    from ivedu.prompts import neutral_words
    words = neutral_words(world.general)
    assert words == ["give", "in", "the", "which"]
    task = world.task("capital")
    with pytest.raises(ValueError, match="neutral_words"):
        corrupted_prompts(task, style="neutral", n=4, fmt=FMT)
    corrupted = corrupted_prompts(task, style="neutral", n=4, neutral=words, fmt=FMT)
    for prompt, ex in zip(corrupted.prompts, corrupted.answers):
        inside = prompt.split(" . ")[1].split()
        assert len(inside) == 3 and set(inside) <= set(words)
    model, tok = tiny
    means = mean_head_activations(model, tok, clean_prompts(task, n=4, fmt=FMT).prompts)
    fast = indirect_effects(model, tok, corrupted.prompts, corrupted.answers, means)
    assert torch.allclose(fast, indirect_effects_reference(model, tok, corrupted.prompts, corrupted.answers, means),
                          atol=1e-5)
