"""Training the tiny model: deterministic, and the CLI writes a loadable checkpoint."""

import json
from dataclasses import replace

import torch

import ivedu
from ivedu.toy import TinyConfig, main, train_tiny_model

SMALL = TinyConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, steps=6,
                   pretrain_steps=3, batch_size=8, warmup_steps=2)


def test_same_seed_gives_the_same_training_curve_and_weights():
    a, _, history_a = train_tiny_model(SMALL, log_every=1)
    b, _, history_b = train_tiny_model(SMALL, log_every=1)
    assert history_a.loss == history_b.loss
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(pa, pb), name


def test_residual_noise_changes_training_deterministically_and_leaves_no_hooks():
    """The noise option (off in the shipped recipe) trains under noise and cleans up after."""
    noisy = replace(SMALL, residual_noise=0.5)
    a, _, history_a = train_tiny_model(noisy, log_every=1)
    b, _, history_b = train_tiny_model(noisy, log_every=1)
    _, _, plain = train_tiny_model(SMALL, log_every=1)
    assert history_a.loss == history_b.loss
    assert history_a.loss[:noisy.pretrain_steps] == plain.loss[:noisy.pretrain_steps]  # no noise in pre-training
    assert history_a.loss[noisy.pretrain_steps:] != plain.loss[noisy.pretrain_steps:]
    assert all(not layer.self_attn.o_proj._forward_hooks for layer in a.model.layers)


def test_cli_writes_a_checkpoint_that_load_model_reads(tmp_path, capsys):
    out = tmp_path / "tiny"
    threads = torch.get_num_threads()
    main(["train", "--out", str(out), "--steps", "4", "--small", "--threads", "1"])
    assert torch.get_num_threads() == threads  # the CLI's thread count does not leak
    assert (out / "model.safetensors").exists() and not (tmp_path / "tiny.tmp").exists()
    recipe = json.loads((out / "ivedu_recipe.json").read_text())
    assert recipe["config"]["steps"] == 4
    model, tokenizer = ivedu.load_model(str(out), device="cpu")
    assert model.config.vocab_size == len(tokenizer)
    assert "saved to" in capsys.readouterr().out
