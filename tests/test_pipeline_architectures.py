"""The whole pipeline on a tiny random model of every architecture in the table.

Scan, instruction vector, intervention, a few fine-tuning steps and evaluation must run end
to end and give finite numbers on every supported family, so that a reader who swaps the
tiny model for Qwen, Gemma or GPT-2 on a GPU meets no code path that was never run. The
models are random (2 layers, 4 heads, hidden 32), with the tiny model's word-level
tokenizer and a vocabulary sized to match it; the numbers are meaningless but must be
numbers.
"""

import dataclasses
import math

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from ivedu.architectures import ARCHITECTURES, Architecture, model_layout
from ivedu.evaluation import instruction_following_score, knowledge_score
from ivedu.extraction import clean_prompts, corrupted_prompts, layer_scale_sweep, scan_task
from ivedu.finetune import finetune
from ivedu.guided import GuidedObjective, GuidedSettings
from ivedu.intervention import instruction_vector, steered_exact_match, steered_first_token_accuracy
from test_architectures import EXTRA, HEADS, HIDDEN, LAYERS
from ivedu.prompts import TINY_FORMAT

FMT = TINY_FORMAT  # the tiny model's prompt format

POSITIONS = 128  # the tiny tokenizer's instructed prompts are ~12 tokens; generation adds a few


def random_model(arch: Architecture, tokenizer) -> torch.nn.Module:
    """A random 2-layer model of ``arch`` whose vocabulary is the tokenizer's."""
    model_type = arch.model_types[0]
    sizes = {arch.hidden_attr: HIDDEN, arch.n_heads_attr: HEADS, arch.n_layers_attr: LAYERS}
    extra = {**EXTRA.get(model_type, {})}
    if "n_positions" in extra:
        extra["n_positions"] = POSITIONS
    config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                  max_position_embeddings=POSITIONS, **sizes, **extra)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


def small(task, n_train: int = 8, n_heldout: int = 4):
    """The task cut to a few examples per split, to keep fourteen pipelines fast."""
    return dataclasses.replace(task, train=task.train[:n_train], valid=task.valid[:n_heldout],
                               test=task.test[:n_heldout])


def finite(*values: float) -> bool:
    return all(math.isfinite(float(v)) for v in values)


@pytest.mark.filterwarnings("ignore:fan_in_fan_out:UserWarning")  # peft on GPT-2's Conv1D, expected
@pytest.mark.parametrize("arch", ARCHITECTURES, ids=lambda a: a.name)
def test_scan_vector_intervention_finetuning_and_evaluation_run_and_give_finite_numbers(arch, tiny, world):
    _, tokenizer = tiny
    model = random_model(arch, tokenizer)
    task, other = small(world.task("capital")), small(world.task("antonym"))

    scan = scan_task(model, tokenizer, task, clean_prompts(task, "train", n=6, fmt=FMT),
                     corrupted_prompts(task, "train", n=6, fmt=FMT))
    assert scan.effects.shape == (LAYERS, HEADS) and torch.isfinite(scan.effects).all()
    assert finite(scan.clean_prob, scan.corrupted_prob)

    vector = instruction_vector(model, scan.mean_activations, scan.top_heads(2), task.name)
    assert vector.vector.shape == (model_layout(model).hidden_size,) and torch.isfinite(vector.vector).all()

    bare = corrupted_prompts(task, "valid", "removed", n=None, fmt=FMT)
    sweep = layer_scale_sweep(model, tokenizer, {task.name: vector}, {task.name: bare}, range(LAYERS), [1.0])
    assert sweep.shape == (LAYERS, 1) and torch.isfinite(sweep).all()
    accuracy = steered_first_token_accuracy(model, tokenizer, bare.prompts, bare.answers, vector.vector, 0, 2.0)
    em = steered_exact_match(model, tokenizer, bare.prompts, bare.answers, vector.vector, 0, 2.0)
    assert 0.0 <= accuracy <= 1.0 and 0.0 <= em <= 1.0

    tuned = finetune(model, tokenizer, other, method="full", steps=3, batch_size=4, warmup_steps=1, fmt=FMT)
    assert tuned.steps == 3 and finite(*tuned.losses)
    # GPT-2's projections are Conv1D, not nn.Linear: LoRA needs its module named.
    targets = ["c_attn"] if arch.name == "gpt2" else None
    adapted = finetune(model, tokenizer, other, method="lora", steps=2, batch_size=4, warmup_steps=1,
                       target_modules=targets, fmt=FMT)
    assert adapted.steps == 2 and finite(*adapted.losses) and 0 < adapted.trainable_params < tuned.trainable_params
    assert model_layout(adapted.model).n_layers == LAYERS
    # A few IV-guided steps: every term on (both KLs, head MSE, progressive intervention).
    guidance = GuidedSettings(kl_start=1.0, kl_all=0.1, head_mse=1.0, layer=0, progressive_steps=2,
                              kl_gate=0.0, mse_gate=0.0)
    objective = GuidedObjective(model, vector.vector, vector.heads, guidance, steps=2)
    guided = finetune(model, tokenizer, other, method="lora", steps=2, batch_size=4, warmup_steps=1,
                      target_modules=targets, loss_fn=objective, fmt=FMT)
    assert guided.steps == 2 and finite(*guided.losses) and len(objective.history) == 2
    assert all(finite(*terms.values()) for terms in objective.history)
    score = instruction_following_score(tuned.model, tokenizer, task, "test", fmt=FMT)
    knowledge = knowledge_score(tuned.model, tokenizer, task, "test")
    assert finite(score.exact_match, score.first_token_accuracy, score.answer_prob)
    assert finite(knowledge.ranking_accuracy, knowledge.gold_prob)
