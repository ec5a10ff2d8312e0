"""Chapter 5's checker passes on the reference solution and fails on planted wrong answers, on the
profiles' configs and on the config of the real-model profile's loaded model (smol); its reference
is the fine-tuning memory of ivedu.costs.step_costs without the activations."""

import pytest
import torch

from exercise_solutions import solution, stub
from ivedu.costs import (GpuSpec, Shape, TRAINED_BYTES_PER_PARAMETER, Workload, bytes_per_parameter,
                         count_parameters, lora_parameters, meta_model, model_config, step_costs)
from ivedu.exercises import ExerciseError
from ivedu.exercises.ch5 import check_training_memory, training_memory_gib


@pytest.mark.parametrize("name, method, targets, dtype", [
    ("meta-llama/Llama-2-7b-chat-hf", "full", None, torch.bfloat16),
    ("meta-llama/Llama-2-7b-chat-hf", "lora", ("q_proj", "v_proj"), torch.bfloat16),
    ("Qwen/Qwen2.5-0.5B-Instruct", "lora", None, torch.float16),
    ("tiny", "full", None, torch.float32),
    ("tiny", "lora", None, torch.float32),
])
def test_the_reference_is_step_costs_fine_tuning_memory_without_activations(name, method, targets, dtype):
    config = model_config(name)
    work = Workload(n_tasks=1, n_prompts=1, prompt_tokens=8, answer_tokens=2, sweep_layers=1, head_counts=1,
                    scales=1, n_valid=1, n_test=1, n_random=1, steps=1, batch_size=2, lora_rank=8,
                    lora_targets=targets)
    gpu = GpuSpec("any", 80.0, 100.0, 1000.0, dtype)
    tuning = next(c for c in step_costs(config, work, gpu, method=method) if c.step == f"fine-tuning ({method})")
    activations = Shape.of(config).activation_bytes(work.batch_size, work.prompt_tokens + work.answer_tokens + 1,
                                                    dtype)
    expected = (tuning.memory_bytes - activations) / 2**30
    assert training_memory_gib(config, method, 8, targets, dtype) == pytest.approx(expected, rel=1e-9)
    with pytest.raises(ValueError, match="unknown method"):
        training_memory_gib(config, "qlora")


def test_training_memory_checker():
    check_training_memory(training_memory_gib)


def test_weights_counted_twice_in_full_fine_tuning_are_caught():
    def weights_plus_state(config, method, lora_rank=8, lora_targets=None, dtype=torch.bfloat16):
        # planted: the weights' own 2 bytes added on top of the 16 bytes of a trained parameter
        n = count_parameters(config)
        weights = n * bytes_per_parameter(dtype)
        trained = n if method == "full" else lora_parameters(config, lora_rank, lora_targets)
        return (weights + TRAINED_BYTES_PER_PARAMETER * trained) / 2**30

    with pytest.raises(ExerciseError, match="(?s)full fine-tuning of Llama-2-7B.*do not add them again"):
        check_training_memory(weights_plus_state)


def lora_on_every_linear(config, method, lora_rank=8, lora_targets=None, dtype=torch.bfloat16):
    """Wrong: with lora_targets None, adapts the output head (lm_head) too."""
    n = count_parameters(config)
    if method == "full":
        return TRAINED_BYTES_PER_PARAMETER * n / 2**30
    adapters = sum(lora_rank * (m.in_features + m.out_features) for name, m in meta_model(config).named_modules()
                   if isinstance(m, torch.nn.Linear)
                   and (lora_targets is None or name.rsplit(".", 1)[-1] in lora_targets))
    return (n * bytes_per_parameter(dtype) + TRAINED_BYTES_PER_PARAMETER * adapters) / 2**30


def test_an_adapter_on_the_output_head_is_caught():
    with pytest.raises(ExerciseError, match="(?s)every linear layer of Qwen.*output head"):
        check_training_memory(lora_on_every_linear)


def test_frozen_weights_left_out_of_lora_are_caught():
    def adapters_only(config, method, lora_rank=8, lora_targets=None, dtype=torch.bfloat16):
        # planted: LoRA's memory without the frozen weights the forward pass still needs
        if method == "full":
            return TRAINED_BYTES_PER_PARAMETER * count_parameters(config) / 2**30
        return TRAINED_BYTES_PER_PARAMETER * lora_parameters(config, lora_rank, lora_targets) / 2**30

    with pytest.raises(ExerciseError, match="(?s)LoRA of rank 8 on q_proj.*frozen"):
        check_training_memory(adapters_only)


def test_a_stub_gets_a_clear_message():
    with pytest.raises(ExerciseError, match="NotImplementedError"):
        check_training_memory(stub)


def test_training_memory_check_on_the_smol_models_config(smol, capsys):
    """Chapter 5's check cell on the smol profile passes the loaded model's config: SmolLM2, a Llama
    with tied embeddings. Its count from the config is the loaded model's own, embeddings once."""
    model, _ = smol
    config = model.config
    assert count_parameters(config) == sum(p.numel() for p in model.parameters())
    check_training_memory(solution("05_scaling_up", "training_memory_gib"), config=config)
    assert "9 configs and methods" in capsys.readouterr().out
    with pytest.raises(ExerciseError, match="NotImplementedError"):
        check_training_memory(stub, config=config)
    with pytest.raises(ExerciseError, match="output head"):
        check_training_memory(lora_on_every_linear, config=config)
    # Qwen's case catches it first; the chapter's would too: SmolLM2's head is 576 x 49152
    wrong, right = lora_on_every_linear(config, "lora"), training_memory_gib(config, "lora")
    assert abs(wrong - right) > 100 * 1e-4 * right
