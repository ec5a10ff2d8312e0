"""Loading a GGUF file: converted once, cached, read back with the same logits; folders and bad files.

The GGUF file is written here, from a tiny random Llama and a byte-level tokenizer, with the
``gguf`` package transformers reads it with (the ``smol`` extra installs it).
"""

import importlib.util

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.convert_slow_tokenizer import bytes_to_unicode

import ivedu
from ivedu import gguf_models
from ivedu.gguf_models import GGUFModelError, is_gguf

gguf = pytest.importorskip("gguf")

MERGES = ["Ġ t", "h e", "Ġt he", "Ġ c", "a t"]


def byte_level_vocabulary() -> list[str]:
    """The 256 byte symbols, the merges' results, and an end-of-text token (the last)."""
    merged = [a + b for a, b in (m.split(" ") for m in MERGES)]
    return list(bytes_to_unicode().values()) + merged + ["<|endoftext|>"]


def permuted(weight, n_head: int):
    """Rows of a query or key projection in llama.cpp's order, the one transformers undoes on reading."""
    return weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(
        weight.shape)


def write_gguf(path, seed: int = 0) -> LlamaForCausalLM:
    """Write a tiny random Llama (2 layers, 4 heads, 2 key-value heads, hidden 16) with its
    tokenizer as a float32 GGUF file at ``path``; return the model."""
    tokens = byte_level_vocabulary()
    config = LlamaConfig(vocab_size=len(tokens), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         tie_word_embeddings=False, bos_token_id=len(tokens) - 1, eos_token_id=len(tokens) - 1)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("ivedu test llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(config.head_dim)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.NORMAL] * (len(tokens) - 1) + [gguf.TokenType.CONTROL])
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(config.bos_token_id)
    writer.add_eos_token_id(config.eos_token_id)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    for key, tensor in model.state_dict().items():
        weight = tensor.numpy()
        if ".q_proj." in key:
            weight = permuted(weight, config.num_attention_heads)
        elif ".k_proj." in key:
            weight = permuted(weight, config.num_key_value_heads)
        writer.add_tensor(names.get_name(key, try_suffixes=(".weight",)), weight)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return model


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty ivedu cache for the test ($IVEDU_CACHE)."""
    monkeypatch.setenv("IVEDU_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "models"


def test_a_gguf_file_loads_converted_once_and_cached_with_the_same_logits(tmp_path, cache, monkeypatch):
    path = tmp_path / "Tiny-Llama.F32.gguf"
    source = write_gguf(path)
    model, tokenizer = ivedu.load_model(str(path), device="cpu")
    assert isinstance(model, LlamaForCausalLM) and model.dtype == torch.float32 and not model.training
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None
    ids = tokenizer(" the cat sat", return_tensors="pt").input_ids
    assert tokenizer.decode(ids[0]) == " the cat sat" and tokenizer.convert_ids_to_tokens(ids[0])[0] == "Ġthe"
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, source(ids).logits, atol=1e-6, rtol=1e-6)
    folders = list(cache.iterdir())
    assert len(folders) == 1 and folders[0].name.startswith("tiny-llama.f32-")
    assert (folders[0] / "model.safetensors").exists() and (folders[0] / "ivedu_complete").exists()

    monkeypatch.setattr(gguf_models, "_dequantise", lambda *a: pytest.fail("a cached file must not be converted"))
    again, _ = ivedu.load_model(str(path), device="cpu")  # read back from the cache
    with torch.no_grad():
        assert torch.equal(again(ids).logits, model(ids).logits)
    # A folder holding the one GGUF file loads the same model, from the same cache.
    folder_model, _ = ivedu.load_model(str(tmp_path), device="cpu")
    with torch.no_grad():
        assert torch.equal(folder_model(ids).logits, model(ids).logits)
    assert list(cache.iterdir()) == folders


def test_what_counts_as_a_gguf_name(tmp_path):
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    (tmp_path / "hf" / "extra.gguf").write_bytes(b"")
    (tmp_path / "ggufs").mkdir()
    (tmp_path / "ggufs" / "a.gguf").write_bytes(b"")
    assert is_gguf(tmp_path / "x.GGUF") and is_gguf(tmp_path / "ggufs")
    assert not is_gguf(tmp_path / "hf") and not is_gguf("Qwen/Qwen2.5-0.5B-Instruct") and not is_gguf("tiny")


def test_a_folder_with_several_gguf_files_or_none_and_a_missing_file_are_refused(tmp_path, cache):
    for name in ("model.Q4_0.gguf", "model.Q8_0.gguf"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(GGUFModelError, match=r"holds 2 GGUF files \(model.Q4_0.gguf, model.Q8_0.gguf\): pass the "
                                             r"file to load"):
        ivedu.load_model(str(tmp_path), device="cpu")
    with pytest.raises(GGUFModelError, match="no GGUF file at .*missing.gguf"):
        ivedu.load_model(str(tmp_path / "missing.gguf"), device="cpu")


def test_a_file_that_is_not_gguf_is_refused_naming_it_and_nothing_is_cached(tmp_path, cache):
    path = tmp_path / "broken.gguf"
    path.write_bytes(b"GGUF" + bytes(100))
    with pytest.raises(GGUFModelError, match=r"could not read .*broken.gguf .*check that it is a complete GGUF "
                                             r"file.*llama"):
        ivedu.load_model(str(path), device="cpu")
    assert not cache.exists() or [p for p in cache.iterdir()] == []


def test_without_the_gguf_package_the_error_says_what_to_install(tmp_path, cache, monkeypatch):
    path = tmp_path / "tiny.gguf"
    write_gguf(path)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    with pytest.raises(GGUFModelError, match="needs the gguf package: run `pip install gguf`"):
        ivedu.load_model(str(path), device="cpu")
