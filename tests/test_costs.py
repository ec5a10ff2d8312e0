"""Costs: exact parameter counts from configs, and the arithmetic behind chapter 5's table."""

import pytest
import torch
from transformers import LlamaConfig

from ivedu import costs
from ivedu.costs import GPUS, Workload, count_parameters, model_config, step_costs


def test_parameter_counts_match_the_published_sizes_and_a_real_model():
    assert count_parameters(model_config("meta-llama/Llama-2-7b-chat-hf")) == 6_738_415_616
    assert count_parameters(model_config("Qwen/Qwen2.5-0.5B-Instruct")) == 494_032_768
    config = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    from transformers import LlamaForCausalLM
    assert count_parameters(config) == sum(p.numel() for p in LlamaForCausalLM(config).parameters())


def test_tiny_model_count_matches_the_checkpoint(tiny):
    model, _ = tiny
    assert count_parameters(model_config("tiny")) == sum(p.numel() for p in model.parameters())


def test_lora_counts_rank_times_in_plus_out_of_each_adapted_linear():
    config = model_config("meta-llama/Llama-2-7b-chat-hf")
    assert costs.lora_parameters(config, 8, ("q_proj", "v_proj")) == 32 * 2 * 8 * (4096 + 4096)


def test_bytes_and_roofline():
    assert costs.weight_bytes(model_config("tiny"), torch.float16) == 2 * count_parameters(model_config("tiny"))
    gpu = GPUS["T4"]
    compute_bound = costs.roofline_seconds(1e15, 0, gpu)
    assert compute_bound == pytest.approx(1e15 / (65e12 * costs.COMPUTE_EFFICIENCY))
    assert costs.roofline_seconds(0, 1e9, gpu) == pytest.approx(1e9 / (320e9 * costs.BANDWIDTH_EFFICIENCY))
    with pytest.raises(ValueError, match="no byte size"):
        costs.bytes_per_parameter(torch.int8)


def test_full_fine_tuning_of_7b_does_not_fit_80gb_but_lora_does():
    config = model_config("meta-llama/Llama-2-7b-chat-hf")
    work = Workload(n_tasks=4, n_prompts=32, prompt_tokens=40, answer_tokens=3, sweep_layers=4, head_counts=2,
                    scales=3, n_valid=40, n_test=40, n_random=5, steps=100, batch_size=8, lora_rank=8,
                    lora_targets=("q_proj", "v_proj"))
    full = {c.step: c for c in step_costs(config, work, GPUS["A100-80GB"], method="full")}
    lora = {c.step: c for c in step_costs(config, work, GPUS["A100-80GB"], method="lora")}
    assert not full["fine-tuning (full)"].fits and full["fine-tuning (full)"].memory_bytes > 16 * 6.7e9
    assert lora["fine-tuning (lora)"].fits
    assert lora["guided training (lora)"].seconds > lora["fine-tuning (lora)"].seconds
    assert all(c.basis == "estimate (arithmetic)" and c.seconds >= 0 for c in full.values())
    with pytest.raises(ValueError, match="unknown method"):
        step_costs(config, work, GPUS["T4"], method="qlora")
