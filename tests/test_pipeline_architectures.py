"""The pipeline on a tiny random model of every decoder-only type transformers ships.

Scan, instruction vector, steering and a LoRA step must run end to end and give finite
numbers on every type whose layout is found, so that a reader who swaps the tiny model for
Qwen, Gemma, GPT-2 or any other causal LM on a GPU meets no code path that was never run; the
families the architecture table used to name also run full fine-tuning, IV-guided training and
evaluation. The models are random (2 layers, 4 heads, hidden 32), with the tiny model's
word-level tokenizer and a vocabulary sized to match it; the numbers are meaningless but must
be numbers. Types that cannot be built small here are skipped with the reason (see
tests/model_types.py); types without attention in every layer must be refused.
"""

import dataclasses
import math

import pytest
import torch
from peft.tuners.lora import LoraLayer
from transformers import AutoConfig, AutoModelForCausalLM

from ivedu.architectures import Architecture, model_layout
from ivedu.evaluation import instruction_following_score, knowledge_score
from ivedu.extraction import clean_prompts, corrupted_prompts, layer_scale_sweep, scan_task
from ivedu.finetune import finetune
from ivedu.guided import GuidedObjective, GuidedSettings
from ivedu.intervention import Steering, instruction_vector, steered_exact_match, steered_first_token_accuracy
from ivedu.mediation import mean_head_activations
from ivedu.prompts import TINY_FORMAT
from ivedu.settings import FinetuneSettings
from ivedu.study import ModelUnderStudy
from model_types import FAILS_IN_TRANSFORMERS, NO_KV_CACHE, NO_LORA, built_and_laid_out, causal_lm_types
from test_architectures import EXTRA, FORMER_TABLE, HEADS, HIDDEN, LAYERS

FMT = TINY_FORMAT  # the tiny model's prompt format


def quick(steps: int, warmup: int = 1, targets: tuple[str, ...] | None = None) -> FinetuneSettings:
    """A few steps of fine-tuning at batch 4 and a rate of 3e-4, with no stop rule."""
    return FinetuneSettings(max_steps=steps, batch_size=4, warmup_steps=warmup, stop_at=None, schedule="linear",
                            lr_full=3e-4, lr_lora=3e-4, lora_targets=targets)

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
    """The task cut to a few examples per split, to keep a pipeline per model type fast."""
    return dataclasses.replace(task, train=task.train[:n_train], valid=task.valid[:n_heldout],
                               test=task.test[:n_heldout])


def finite(*values: float) -> bool:
    return all(math.isfinite(float(v)) for v in values)


@pytest.mark.filterwarnings("ignore:fan_in_fan_out:UserWarning")  # peft on GPT-2's Conv1D, expected
@pytest.mark.parametrize("arch", FORMER_TABLE, ids=lambda a: a.name)
def test_scan_vector_intervention_finetuning_and_evaluation_run_and_give_finite_numbers(arch, tiny, world):
    _, tokenizer = tiny
    model = random_model(arch, tokenizer)
    lm = ModelUnderStudy(model, tokenizer, FMT)
    task, other = small(world.task("capital")), small(world.task("antonym"))

    scan = scan_task(lm, task, clean_prompts(task, "train", n=6, fmt=FMT),
                     corrupted_prompts(task, "train", n=6, fmt=FMT))
    assert scan.effects.shape == (LAYERS, HEADS) and torch.isfinite(scan.effects).all()
    assert finite(scan.clean_prob, scan.corrupted_prob)

    vector = instruction_vector(model, scan.mean_activations, scan.top_heads(2), task.name)
    assert vector.vector.shape == (model_layout(model).hidden_size,) and torch.isfinite(vector.vector).all()

    bare = corrupted_prompts(task, "valid", "removed", n=None, fmt=FMT)
    sweep = layer_scale_sweep(lm, {task.name: vector}, {task.name: bare}, range(LAYERS), [1.0], "attention")
    assert sweep.shape == (LAYERS, 1) and torch.isfinite(sweep).all()
    steering = Steering(0, 2.0, "attention")
    accuracy = steered_first_token_accuracy(lm, bare.prompts, bare.answers, vector.vector, steering)
    em = steered_exact_match(lm, bare.prompts, bare.answers, vector.vector, steering)
    assert 0.0 <= accuracy <= 1.0 and 0.0 <= em <= 1.0

    tuned = finetune(lm, other, quick(3), "full", 0)
    assert tuned.steps == 3 and finite(*tuned.losses)
    # GPT-2's projections are Conv1D, not nn.Linear: LoRA needs its module named.
    targets = ("c_attn",) if arch.name == "gpt2" else None
    adapted = finetune(lm, other, quick(2, targets=targets), "lora", 0)
    assert adapted.steps == 2 and finite(*adapted.losses) and 0 < adapted.trainable_params < tuned.trainable_params
    assert model_layout(adapted.model).n_layers == LAYERS
    # A few IV-guided steps: every term on (both KLs, head MSE, progressive intervention).
    guidance = GuidedSettings(kl_start=1.0, kl_all=0.1, head_mse=1.0, layer=0, progressive_steps=2,
                              kl_gate=0.0, mse_gate=0.0)
    objective = GuidedObjective(model, vector.vector, vector.heads, guidance, steps=2)
    guided = finetune(lm, other, quick(2, targets=targets), "lora", 0, objective)
    assert guided.steps == 2 and finite(*guided.losses) and len(objective.history) == 2
    assert all(finite(*terms.values()) for terms in objective.history)
    score = instruction_following_score(lm.with_model(tuned.model), task, "test")
    knowledge = knowledge_score(lm.with_model(tuned.model), task, "test")
    assert finite(score.exact_match, score.first_token_accuracy, score.answer_prob)
    assert finite(knowledge.ranking_accuracy, knowledge.gold_prob)


@pytest.mark.filterwarnings("ignore:fan_in_fan_out:UserWarning")  # peft on Conv1D projections, expected
@pytest.mark.parametrize("model_type", causal_lm_types())
def test_every_decoder_only_type_runs_scan_vector_steering_and_a_lora_step(model_type, tiny, world):
    _, tokenizer = tiny
    built = built_and_laid_out(model_type, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                               bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                               positions=POSITIONS)
    if built is None:
        return
    model, layout = built
    lm = ModelUnderStudy(model, tokenizer, FMT)
    if model_type in FAILS_IN_TRANSFORMERS:
        pytest.skip(f"fails in transformers itself: {FAILS_IN_TRANSFORMERS[model_type]}")
    task, other = small(world.task("capital"), n_heldout=2), small(world.task("antonym"))

    clean = clean_prompts(task, "train", n=4, fmt=FMT)
    if model_type in NO_KV_CACHE:  # the scan cannot continue this model's cache: mean head outputs instead
        mean, heads = mean_head_activations(model, tokenizer, clean.prompts), [(0, 0), (layout.n_layers - 1, 1)]
        assert mean.shape == (layout.n_layers, layout.n_heads, layout.head_dim)
    else:
        scan = scan_task(lm, task, clean, corrupted_prompts(task, "train", n=4, fmt=FMT))
        assert scan.effects.shape == (layout.n_layers, layout.n_heads) and torch.isfinite(scan.effects).all()
        mean, heads = scan.mean_activations, scan.top_heads(2)
    vector = instruction_vector(model, mean, heads, task.name)
    assert vector.vector.shape == (layout.hidden_size,) and torch.isfinite(vector.vector).all()
    bare = corrupted_prompts(task, "valid", "removed", n=None, fmt=FMT)
    steering = Steering(0, 2.0, "attention")
    accuracy = steered_first_token_accuracy(lm, bare.prompts, bare.answers, vector.vector, steering)
    assert 0.0 <= accuracy <= 1.0

    if model_type in NO_LORA:
        pytest.skip(f"vector and steering ran; no LoRA step: {NO_LORA[model_type]}")
    # One LoRA step on the projections whose inputs are the heads: the layout must then find
    # the adapter-wrapped modules, so hooks see what the adapted model computes.
    adapted = finetune(lm, other, quick(1, warmup=0, targets=(layout.architecture.attention_out,)), "lora", 0)
    assert adapted.steps == 1 and finite(*adapted.losses)
    assert all(isinstance(proj, LoraLayer) for proj in model_layout(adapted.model).out_projs)
