"""Checkers for chapter 5's exercise: what fine-tuning costs in GPU memory.

- Exercise 5.1, :func:`check_training_memory`: the GiB of weights, gradients and AdamW states
  that full fine-tuning or LoRA needs for a model given its config, as :mod:`ivedu.costs`
  counts them (reference: :func:`training_memory_gib`, :func:`ivedu.costs.training_state_bytes` in GiB,
  the state that ``step_costs`` adds the activations to).

The configs are built locally (:func:`ivedu.costs.model_config` for the profiles' hub models,
a small ``LlamaConfig`` for float32), so the check downloads nothing and takes well under a second.
When the chapter passes its own model's config (SmolLM2's on the smol profile: a Llama with tied
embeddings), the check also runs on it: the count is arithmetic on the config, the same on every
profile, but the learner then sees the number for the model in front of them.
"""

from __future__ import annotations

from typing import Callable

import torch
from transformers import LlamaConfig, PretrainedConfig

from ivedu.costs import model_config, training_state_bytes
from ivedu.exercises import Case, check_against_reference, passed

GIB = 2**30


def training_memory_gib(config: PretrainedConfig, method: str, lora_rank: int = 8,
                        lora_targets: tuple[str, ...] | None = None, dtype: torch.dtype = torch.bfloat16) -> float:
    """GiB of weights, gradients and optimizer states to fine-tune the model of ``config``
    by ``method`` (``"full"`` or ``"lora"``), activations left out:
    :func:`ivedu.costs.training_state_bytes` in GiB."""
    return training_state_bytes(config, method, lora_rank, lora_targets, dtype) / GIB


def _small_llama() -> LlamaConfig:
    return LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2)


FULL_HINT = ("full fine-tuning trains every parameter, and a trained parameter takes 16 bytes in all, whatever the "
             "dtype: in mixed precision its 2-byte weight and 2-byte gradient, a 4-byte float32 master copy and two "
             "4-byte AdamW moments. The weight's own bytes are among the 16, so do not add them again. "
             "costs.count_parameters(config) counts the parameters; divide the bytes by 2**30 for GiB.")
LORA_HINT = ("LoRA keeps every weight frozen in `dtype` (count_parameters(config) * bytes_per_parameter(dtype) "
             "bytes: 4 in float32, 2 in 16-bit) and trains only the adapters, 16 bytes per adapter parameter. "
             "An adapter of rank r on an nn.Linear has r * (in_features + out_features) parameters; adapt the "
             "linear layers of costs.meta_model(config) whose name ends in one of lora_targets or, when "
             "lora_targets is None, every nn.Linear except the output head (model.get_output_embeddings()).")


def check_training_memory(memory_gib: Callable, config: PretrainedConfig | None = None) -> None:
    """Exercise 5.1: ``memory_gib(config, method, lora_rank=8, lora_targets=None,
    dtype=torch.bfloat16) -> float``, the GiB of weights, gradients and AdamW states of full
    fine-tuning or LoRA (activations left out), as :func:`training_memory_gib` counts them.

    Checked on the colab and paper profiles' models and a small Llama, then -- when given -- on
    the chapter's own model's ``config`` (full fine-tuning, LoRA on every linear layer, LoRA on
    ``q_proj`` and ``v_proj``), to ``1e-4`` relative: counts of parameters are exact."""
    llama, qwen, small = (model_config("meta-llama/Llama-2-7b-chat-hf"), model_config("Qwen/Qwen2.5-0.5B-Instruct"),
                          _small_llama())
    full = [Case("for full fine-tuning of Llama-2-7B in bfloat16", (llama, "full")),
            Case("for full fine-tuning of Qwen2.5-0.5B in float16", (qwen, "full"), {"dtype": torch.float16}),
            Case("for full fine-tuning of a small Llama in float32", (small, "full"), {"dtype": torch.float32})]
    lora = [Case("for LoRA of rank 8 on q_proj and v_proj of Llama-2-7B in bfloat16 (the paper profile)",
                 (llama, "lora", 8, ("q_proj", "v_proj"))),
            Case("for LoRA of rank 8 on every linear layer of Qwen2.5-0.5B in float16 (the colab profile)",
                 (qwen, "lora", 8, None), {"dtype": torch.float16}),
            Case("for LoRA of rank 4 on every linear layer of a small Llama in float32",
                 (small, "lora", 4, None), {"dtype": torch.float32})]
    n = check_against_reference(memory_gib, training_memory_gib, full, rtol=1e-4, hint=FULL_HINT)
    n += check_against_reference(memory_gib, training_memory_gib, lora, rtol=1e-4, hint=LORA_HINT)
    if config is not None:
        name = f"the chapter's model ({config.model_type}, {'tied' if config.tie_word_embeddings else 'untied'} embeddings)"
        n += check_against_reference(memory_gib, training_memory_gib,
                                     [Case(f"for full fine-tuning of {name} in bfloat16", (config, "full"))],
                                     rtol=1e-4, hint=FULL_HINT)
        n += check_against_reference(
            memory_gib, training_memory_gib,
            [Case(f"for LoRA of rank 8 on every linear layer of {name} in bfloat16", (config, "lora", 8, None)),
             Case(f"for LoRA of rank 16 on q_proj and v_proj of {name} in float32",
                  (config, "lora", 16, ("q_proj", "v_proj")), {"dtype": torch.float32})],
            rtol=1e-4, hint=LORA_HINT)
    passed("training memory", f"{n} configs and methods match ivedu.costs")
