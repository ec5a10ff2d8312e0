"""Saved artifacts: they round-trip exactly, refuse a model they do not fit, and a failed save loses nothing."""

import copy
import json
import re
from pathlib import Path

import pytest
import safetensors.torch
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

import ivedu
from ivedu.artifacts import load_adapter, load_scan, load_vector, save_adapter, save_scan, save_vector
from ivedu.intervention import InstructionVector, instruction_vector
from ivedu.mediation import HeadScan

FIELDS = {"kind", "format", "ivedu_version", "model_id", "hidden_size", "n_layers", "n_heads", "head_dim",
          "layer", "task", "heads", "dtype"}


def other_llama(hidden: int = 64, layers: int = 4, vocab: int = 342):
    """A random Llama unlike the tiny model (hidden 128, 4 layers, 4 heads)."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128)
    return LlamaForCausalLM(config).eval()


def a_vector(model) -> InstructionVector:
    means = torch.randn(4, 4, 32, generator=torch.Generator().manual_seed(0))
    return instruction_vector(model, means, [(1, 2), (0, 3)], "capital")


def a_scan() -> HeadScan:
    g = torch.Generator().manual_seed(0)
    return HeadScan("plural", torch.randn(4, 4, generator=g), torch.randn(4, 4, 32, generator=g),
                    corrupted_prob=0.125, clean_prob=0.875)


def an_adapter(model):
    torch.manual_seed(0)
    # init_lora_weights=False: B is random too, so the adapter really changes the outputs.
    config = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    return get_peft_model(copy.deepcopy(model), config).eval()


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


# --- round trips ----------------------------------------------------------------------------------

def test_vector_round_trip_with_metadata(tiny, tmp_path):
    model, _ = tiny
    iv = a_vector(model)
    written = save_vector(tmp_path / "capital_iv", iv, model, layer=2, model_id="tiny")
    assert files(tmp_path) == {"capital_iv.safetensors", "capital_iv.json"} and written.name == "capital_iv.safetensors"
    loaded, meta = load_vector(tmp_path / "capital_iv", model)
    assert torch.equal(loaded.vector, iv.vector) and loaded.vector.dtype == torch.float32
    assert loaded.heads == iv.heads == ((1, 2), (0, 3)) and loaded.task == "capital"
    assert FIELDS <= set(meta)
    assert meta == json.loads((tmp_path / "capital_iv.json").read_text())
    assert (meta["kind"], meta["model_id"], meta["layer"], meta["task"], meta["dtype"]) == \
        ("instruction_vector", "tiny", 2, "capital", "float32")
    assert (meta["hidden_size"], meta["n_layers"], meta["n_heads"], meta["head_dim"]) == (128, 4, 4, 32)
    assert meta["ivedu_version"] == ivedu.__version__
    # Either file of the pair names the artifact.
    assert torch.equal(load_vector(written)[0].vector, iv.vector)


def test_vectors_are_saved_in_float32(tiny, tmp_path):
    model, _ = tiny
    iv = a_vector(model)
    save_vector(tmp_path / "v", InstructionVector("t", iv.vector.double(), iv.heads), model, layer=0, model_id="tiny")
    loaded, _ = load_vector(tmp_path / "v.safetensors")
    assert loaded.vector.dtype == torch.float32 and torch.equal(loaded.vector, iv.vector)


def test_scan_round_trip(tiny, tmp_path):
    model, _ = tiny
    scan = a_scan()
    save_scan(tmp_path / "scan", scan, model, model_id="tiny")
    loaded, meta = load_scan(tmp_path / "scan", model)
    assert torch.equal(loaded.effects, scan.effects) and torch.equal(loaded.mean_activations, scan.mean_activations)
    assert (loaded.task, loaded.corrupted_prob, loaded.clean_prob) == ("plural", 0.125, 0.875)
    assert loaded.top_heads(3) == scan.top_heads(3)
    assert FIELDS <= set(meta) and meta["kind"] == "scan" and meta["layer"] is None


def test_adapter_round_trip_leaves_the_base_model_alone(tiny, tmp_path):
    model, _ = tiny
    tuned = an_adapter(model)
    ids = torch.tensor([[1, 5, 9, 30, 41, 7]])
    before = logits(model, ids)
    save_adapter(tmp_path / "adapter", tuned, model_id="tiny", task="repeat")
    assert {"adapter_model.safetensors", "adapter_config.json", "ivedu.json"} <= files(tmp_path / "adapter")
    assert files(tmp_path) == {"adapter"}
    loaded, meta = load_adapter(tmp_path / "adapter", model)
    assert isinstance(loaded, PeftModel) and not loaded.training
    assert torch.equal(logits(loaded, ids), logits(tuned, ids))
    assert not torch.allclose(logits(loaded, ids), before)  # the adapter does something...
    assert torch.equal(logits(model, ids), before)  # ...to a copy, not to the caller's model
    assert FIELDS <= set(meta) and (meta["kind"], meta["task"], meta["dtype"]) == ("adapter", "repeat", "float32")


def test_saving_again_replaces_an_adapter(tiny, tmp_path):
    model, _ = tiny
    save_adapter(tmp_path / "adapter", an_adapter(model), model_id="tiny", task="first")
    save_adapter(tmp_path / "adapter", an_adapter(model), model_id="tiny", task="second")
    assert load_adapter(tmp_path / "adapter", model)[1]["task"] == "second"
    assert files(tmp_path) == {"adapter"}


# --- loading into a model that does not fit ---------------------------------------------------------

def test_a_vector_from_another_model_is_refused_naming_the_mismatch(tiny, tmp_path):
    model, _ = tiny
    save_vector(tmp_path / "v", a_vector(model), model, layer=3, model_id="tiny")
    with pytest.raises(ValueError, match=r"^this vector was extracted from a model with hidden size 128 \(tiny\); "
                                         r"the given model has 64: re-extract it for this model$"):
        load_vector(tmp_path / "v", other_llama(hidden=64))
    with pytest.raises(ValueError, match="number of layers 4 .* has 2: re-extract"):
        load_vector(tmp_path / "v", other_llama(hidden=128, layers=2))
    assert load_vector(tmp_path / "v")[1]["hidden_size"] == 128  # without a model nothing is checked


def test_a_scan_and_an_adapter_from_another_model_are_refused(tiny, tmp_path):
    model, _ = tiny
    save_scan(tmp_path / "scan", a_scan(), model, model_id="tiny")
    save_adapter(tmp_path / "adapter", an_adapter(model), model_id="tiny", task="t")
    small = other_llama(hidden=64)
    with pytest.raises(ValueError, match="scan was computed on a model with hidden size 128 .* scan this model again"):
        load_scan(tmp_path / "scan", small)
    with pytest.raises(ValueError, match="adapter was trained on a model with hidden size 128 .* has 64"):
        load_adapter(tmp_path / "adapter", small)
    with pytest.raises(ValueError, match="already carries an adapter"):
        load_adapter(tmp_path / "adapter", an_adapter(model))


def test_saving_checks_the_artifact_against_its_model(tiny, tmp_path):
    model, _ = tiny
    iv = a_vector(model)
    with pytest.raises(IndexError, match="layer 4 is out of range"):
        save_vector(tmp_path / "v", iv, model, layer=4, model_id="tiny")
    with pytest.raises(ValueError, match=r"shape \[hidden\] = \[64\]"):
        save_vector(tmp_path / "v", iv, other_llama(hidden=64), layer=0, model_id="tiny")
    with pytest.raises(ValueError, match="model_id must name the model"):
        save_vector(tmp_path / "v", iv, model, layer=0, model_id="")
    with pytest.raises(ValueError, match="does not fit this model"):
        save_scan(tmp_path / "s", a_scan(), other_llama(hidden=64), model_id="x")
    with pytest.raises(TypeError, match="needs a peft model"):
        save_adapter(tmp_path / "a", model, model_id="tiny", task="t")
    assert files(tmp_path) == set()


# --- the wrong kind, a missing or newer artifact -----------------------------------------------------

def test_loading_an_artifact_of_the_wrong_kind_says_which_loader_to_use(tiny, tmp_path):
    model, _ = tiny
    save_scan(tmp_path / "scan", a_scan(), model, model_id="tiny")
    save_vector(tmp_path / "v", a_vector(model), model, layer=0, model_id="tiny")
    save_adapter(tmp_path / "adapter", an_adapter(model), model_id="tiny", task="t")
    with pytest.raises(ValueError, match="holds a head scan, not an instruction vector: load it with .*load_scan"):
        load_vector(tmp_path / "scan")
    with pytest.raises(ValueError, match="holds an instruction vector, not a head scan: .*load_vector"):
        load_scan(tmp_path / "v")
    with pytest.raises(ValueError, match="holds an adapter, not a head scan: .*load_adapter"):
        load_scan(tmp_path / "adapter")
    with pytest.raises(ValueError, match="is a file pair, not an adapter folder"):
        load_adapter(tmp_path / "v", model)
    with pytest.raises(FileNotFoundError, match="no artifact at .*missing.safetensors"):
        load_vector(tmp_path / "missing")


def test_an_artifact_from_a_newer_ivedu_is_refused(tiny, tmp_path):
    model, _ = tiny
    path = save_vector(tmp_path / "v", a_vector(model), model, layer=0, model_id="tiny")
    tensors = safetensors.torch.load_file(str(path))
    meta = json.loads((tmp_path / "v.json").read_text()) | {"format": 99, "ivedu_version": "9.0"}
    safetensors.torch.save_file(tensors, str(path), metadata={"ivedu": json.dumps(meta)})
    (tmp_path / "v.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"saved by a newer ivedu \(9.0, format 99\); upgrade ivedu"):
        load_vector(tmp_path / "v")


# --- atomic writes -----------------------------------------------------------------------------------

def failing_save(exception):
    """A safetensors save that writes half a file, then fails."""
    def save_file(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a header")
        raise exception
    return save_file


@pytest.mark.parametrize("exception", [OSError("disk full"), KeyboardInterrupt()])
def test_a_failed_save_leaves_no_partial_file_and_keeps_the_earlier_artifact(tiny, tmp_path, monkeypatch, exception):
    model, _ = tiny
    iv = a_vector(model)
    save_vector(tmp_path / "v", iv, model, layer=1, model_id="tiny")
    monkeypatch.setattr(safetensors.torch, "save_file", failing_save(exception))
    doubled = InstructionVector("t", 2 * iv.vector, iv.heads)
    with pytest.raises(type(exception)):
        save_vector(tmp_path / "v", doubled, model, layer=1, model_id="tiny")
    with pytest.raises(type(exception)):
        save_scan(tmp_path / "new_scan", a_scan(), model, model_id="tiny")
    monkeypatch.undo()
    assert files(tmp_path) == {"v.safetensors", "v.json"}
    assert torch.equal(load_vector(tmp_path / "v", model)[0].vector, iv.vector)


def test_a_failed_adapter_save_keeps_the_earlier_folder(tiny, tmp_path, monkeypatch):
    model, _ = tiny
    tuned = an_adapter(model)
    save_adapter(tmp_path / "adapter", tuned, model_id="tiny", task="old")

    def half_save(self, folder, **kwargs):
        (Path(folder) / "adapter_model.safetensors").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(PeftModel, "save_pretrained", half_save)
    with pytest.raises(OSError, match="disk full"):
        save_adapter(tmp_path / "adapter", tuned, model_id="tiny", task="new")
    with pytest.raises(OSError, match="disk full"):
        save_adapter(tmp_path / "fresh", tuned, model_id="tiny", task="new")
    monkeypatch.undo()
    assert files(tmp_path) == {"adapter"}
    assert load_adapter(tmp_path / "adapter", model)[1]["task"] == "old"


def test_a_pair_whose_files_disagree_is_refused(tiny, tmp_path):
    """What a save interrupted between its two files would leave: new tensors, old sidecar."""
    model, _ = tiny
    save_vector(tmp_path / "a", a_vector(model), model, layer=0, model_id="tiny")
    save_vector(tmp_path / "b", a_vector(model), model, layer=3, model_id="tiny")
    (tmp_path / "b.safetensors").replace(tmp_path / "a.safetensors")
    with pytest.raises(ValueError, match="disagree .* save the artifact again"):
        load_vector(tmp_path / "a")


def test_no_pickle_anywhere_in_the_package():
    """Every torch.load in ivedu passes weights_only=True (artifacts use safetensors only)."""
    package = Path(ivedu.__file__).parent
    for source in package.rglob("*.py"):
        text = source.read_text()
        assert not re.search(r"^\s*(import pickle|from pickle|import dill)", text, re.M), source
        for match in re.finditer(r"torch\.load\(", text):
            call = text[match.end():text.find(")", match.end())]
            assert "weights_only=True" in call, f"{source}: torch.load without weights_only=True"
