"""Fine-tuning: LoRA trains only its adapters, runs are deterministic for a seed, the loss
falls, and the caller's model is never modified."""

import copy

import pytest
import torch

from ivedu.finetune import finetune, finetune_sequence, linear_module_names, task_sequences
from ivedu.prompts import TINY_FORMAT
from ivedu.settings import FinetuneSettings
from ivedu.study import ModelUnderStudy
from ivedu.tokenizer import world_tokenizer
from ivedu.toy import TinyConfig, build_tiny_model
from ivedu.world import build_world

FMT = TINY_FORMAT  # the tiny model's prompt format

SMALL = TinyConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)


def training(steps: int, lr: float = 3e-4, **changes) -> FinetuneSettings:
    """A test's fine-tuning: ``steps`` steps at ``lr`` (either method), linear decay, no stop rule
    unless ``changes`` say otherwise."""
    return FinetuneSettings(**{"max_steps": steps, "lr_full": lr, "lr_lora": lr, "schedule": "linear",
                               "stop_at": None, **changes})


@pytest.fixture(scope="module")
def setup():
    world = build_world(0)
    tokenizer = world_tokenizer(world)
    model = build_tiny_model(tokenizer, SMALL).eval()
    return ModelUnderStudy(model, tokenizer, FMT, "small"), world


def snapshot(model):
    return {name: p.detach().clone() for name, p in model.state_dict().items()}


def test_lora_trains_only_the_adapters(setup):
    lm, world = setup
    model = lm.model
    original = snapshot(model)
    result = finetune(lm, world.task("first_french"), training(8, 1e-2), "lora", 0)
    tuned = result.model.state_dict()
    lora = [name for name in tuned if "lora_" in name]
    assert lora and result.trainable_params == sum(tuned[n].numel() for n in lora)
    for name, value in tuned.items():
        if "lora_" in name:
            continue
        base = name.replace("base_model.model.", "", 1).replace(".base_layer", "")
        assert torch.equal(value, original[base]), f"base weight {base} changed"
    assert any(tuned[n].abs().sum() > 0 for n in lora if "lora_B" in n), "LoRA B stayed at its zero init"
    assert all(torch.equal(v, original[k]) for k, v in model.state_dict().items()), "caller's model changed"


def test_lora_targets_every_block_projection_and_not_the_head(setup):
    lm, _ = setup
    assert linear_module_names(lm.model) == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])


def test_full_finetuning_is_deterministic_for_a_seed_and_leaves_the_caller_alone(setup):
    lm, world = setup
    model = lm.model
    original = snapshot(model)
    task = world.task("first_french")
    a = finetune(lm, task, training(6, 1e-3), "full", 3)
    b = finetune(lm, task, training(6, 1e-3), "full", 3)
    c = finetune(lm, task, training(6, 1e-3), "full", 4)
    assert a.losses == b.losses
    assert all(torch.equal(v, b.model.state_dict()[k]) for k, v in a.model.state_dict().items())
    assert a.losses != c.losses  # the seed changes the batch order
    assert all(torch.equal(v, original[k]) for k, v in model.state_dict().items())


def test_the_loss_falls(setup):
    lm, world = setup
    result = finetune(lm, world.task("first_french"), training(40, 3e-3, batch_size=16), "full", 0)
    assert len(result.losses) == 40
    assert sum(result.losses[-5:]) / 5 < 0.7 * result.losses[0]


def test_training_data_is_the_train_split_under_every_phrasing_with_answer_only_labels(setup):
    lm, world = setup
    tokenizer = lm.tokenizer
    task = world.task("first_french")
    sequences = task_sequences(lm, task)
    assert len(sequences) == len(task.train) * len(task.instructions)
    first = sequences[0]
    learnt = [i for i, label in zip(first.input_ids, first.labels) if label != -100]
    assert tokenizer.decode(learnt) == f"{task.train[0].output} {tokenizer.eos_token}"


def test_early_stopping_stops_at_the_first_check_that_reaches_the_target(setup):
    lm, world = setup
    stopping = training(50, 1e-3, stop_at=0.0, eval_every=5, schedule="constant")
    result = finetune(lm, world.task("first_french"), stopping, "full", 0)
    assert result.steps == 5 and len(result.losses) == 5 and result.checks[0][0] == 5


def test_the_stop_rule_can_check_a_fixed_subset_of_the_valid_split(setup, monkeypatch):
    import ivedu.finetune as ft

    lm, world = setup
    task = world.task("first_french")
    checked = []
    real = ft.exact_match_score
    monkeypatch.setattr(ft, "exact_match_score", lambda lm, task, split, **k: checked.append(task.split(split))
                        or real(lm, task, split, **k))
    finetune(lm, task, training(4, 1e-3, stop_at=1.1, eval_every=2), "full", 0, stop_examples=5)
    assert checked == [task.valid[:5]] * 2
    assert ft.first_examples(task, "heldout", 3).split("heldout") == (task.valid + task.test)[:3]
    with pytest.raises(ValueError, match="stop_examples"):
        finetune(lm, task, training(2, stop_at=0.5), "full", 0, stop_examples=0)


def test_a_sequence_takes_its_baseline_when_the_caller_has_measured_it(setup, monkeypatch):
    import ivedu.finetune as ft

    lm, world = setup
    tasks = [world.task("first_french"), world.task("middle")]
    plain = finetune_sequence(lm, tasks, training(1, 1e-3), "lora", 0)
    assert plain.baseline.tolist() == ft.sequence_scores(lm, tasks, "test")
    given = finetune_sequence(lm, tasks, training(1, 1e-3), "lora", 0, baseline=plain.baseline.tolist())
    assert given.baseline.tolist() == plain.baseline.tolist() and (given.R == plain.R).all()
    with pytest.raises(ValueError, match="baseline"):
        finetune_sequence(lm, tasks, training(1), "full", 0, baseline=[0.0])


def test_sequence_builds_r_and_ends_with_a_plain_model(setup):
    lm, world = setup
    tasks = [world.task("first_french"), world.task("middle")]
    result = finetune_sequence(lm, tasks, training(3, 1e-3), "lora", 0, general=[world.task("continent")])
    assert result.R.shape == (2, 2) and result.baseline.shape == (2,)
    assert len(result.general) == 3 and result.general[0][0].task == "continent"
    assert [s.steps for s in result.stages] == [3, 3]
    assert not any("lora_" in name for name in result.model.state_dict()), "adapters were not merged"


def test_bad_arguments_are_refused(setup):
    lm, world = setup
    task = world.task("first_french")
    with pytest.raises(ValueError, match="method"):
        finetune(lm, task, training(1), "adapter", 0)
    with pytest.raises(ValueError, match="schedule"):
        finetune(lm, task, training(1, schedule="cosine"), "full", 0)


def test_the_shipped_tokenizer_knows_every_word_of_the_new_tasks():
    import ivedu
    from ivedu.prompts import instructed_prompt

    _, tokenizer = ivedu.load_model("tiny")
    for task in build_world(0).new:
        for ex in task.train[:20] + task.test:
            for phrasing in range(len(task.instructions)):
                ids = tokenizer.encode(instructed_prompt(task, ex.input, phrasing, FMT) + " " + ex.output)
                assert tokenizer.unk_token_id not in ids, (task.name, ex)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_a_float16_model_trains_in_float32_and_stays_finite(setup, method):
    lm, world = setup
    half = copy.deepcopy(lm.model).half()
    result = finetune(lm.with_model(half), world.task("first_french"), training(4, 1e-3), method, 0)
    trained = [p for p in result.model.parameters() if p.requires_grad]
    assert all(p.dtype == torch.float32 for p in trained)
    assert all(torch.isfinite(p).all() for p in trained)
    assert all(torch.isfinite(torch.tensor(loss)) for loss in result.losses)
    assert next(half.parameters()).dtype == torch.float16  # the caller's model is untouched


def test_full_fine_tuning_of_a_bfloat16_model_keeps_float32_master_weights(setup):
    """An update of lr 1e-5 rounds away in bfloat16; in the float32 master weights it lands."""
    lm, world = setup
    bf16 = copy.deepcopy(lm.model).to(torch.bfloat16)
    result = finetune(lm.with_model(bf16), world.task("first_french"),
                      training(1, 1e-5, warmup_steps=0, schedule="constant"), "full", 0)
    before = dict(bf16.named_parameters())
    moved = 0
    for name, p in result.model.named_parameters():
        assert p.dtype == torch.float32, name
        moved += int((p - before[name].float()).abs().max() > 0)
    assert moved >= len(before) // 2  # AdamW's first step moves every weight with a gradient by about lr
    # The same update applied in bfloat16 is lost on every weight of magnitude 2**-7 or more.
    weight = before["model.layers.0.mlp.up_proj.weight"].detach()
    big = weight.abs() >= 2 ** -7
    assert big.float().mean() > 0.5
    assert torch.equal((weight.float() + 1e-5 * torch.sign(weight.float())).to(torch.bfloat16)[big], weight[big])
