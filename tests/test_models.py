"""Loading: the shipped tiny model, a local Hugging Face folder, tokenizers without padding."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import ivedu
from ivedu.models import TINY_CHECKPOINT, choose_dtype, prepare_tokenizer
from ivedu.tokenizer import build_tokenizer


def test_tiny_model_loads_from_the_shipped_checkpoint_without_training(monkeypatch):
    import ivedu.toy
    monkeypatch.setattr(ivedu.toy, "train_tiny_model", lambda *a, **k: pytest.fail("loading must not train"))
    model, tokenizer = ivedu.load_model("tiny")
    assert not model.training
    assert model.config.num_hidden_layers >= 4 and model.config.num_attention_heads >= 4
    assert (TINY_CHECKPOINT / "model.safetensors").stat().st_size <= 10 * 1024 * 1024
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None


def test_any_local_causal_lm_folder_loads_the_same_way(tmp_path):
    tokenizer = build_tokenizer("a b c".split())
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2)
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model, loaded = ivedu.load_model(str(tmp_path), device="cpu")
    assert isinstance(model, LlamaForCausalLM) and model.dtype == torch.float32
    assert loaded.padding_side == "left"


def test_a_tokenizer_without_pad_token_reuses_eos():
    tokenizer = build_tokenizer("a b".split())
    tokenizer.pad_token = None
    prepared = prepare_tokenizer(tokenizer)
    assert prepared.pad_token == prepared.eos_token and prepared.padding_side == "left"


def test_cpu_dtype_is_float32():
    assert choose_dtype("cpu") == torch.float32
