"""Training the tiny model: deterministic, and the CLI writes a loadable checkpoint."""

import json

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


def test_cli_writes_a_checkpoint_that_load_model_reads(tmp_path, capsys):
    out = tmp_path / "tiny"
    main(["train", "--out", str(out), "--steps", "4", "--small"])
    assert (out / "model.safetensors").exists() and not (tmp_path / "tiny.tmp").exists()
    recipe = json.loads((out / "ivedu_recipe.json").read_text())
    assert recipe["config"]["steps"] == 4
    model, tokenizer = ivedu.load_model(str(out), device="cpu")
    assert model.config.vocab_size == len(tokenizer)
    assert "saved to" in capsys.readouterr().out
