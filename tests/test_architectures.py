"""Finding a model's layers and heads: from its structure on every decoder-only type transformers
ships, from a registered layout, and the same modules the former architecture table named."""

import types

import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig

from ivedu import architectures
from ivedu.architectures import (ARCHITECTURES, Architecture, UnsupportedArchitectureError, check_head,
                                 check_layer, find_architecture, model_layout, project_heads,
                                 register_architecture)
from ivedu.hooks import add_to_residual, record_head_outputs
from model_types import built_and_laid_out, causal_lm_types

HIDDEN, HEADS, LAYERS = 32, 4, 2
# The architecture table as it stood before layouts were found from the structure: for each of
# these families the finder must return the very modules and sizes its entry named.
FORMER_TABLE: tuple[Architecture, ...] = (
    Architecture("llama", ("llama",), "model.layers", "self_attn.o_proj"),
    Architecture("mistral", ("mistral",), "model.layers", "self_attn.o_proj"),
    Architecture("mixtral", ("mixtral",), "model.layers", "self_attn.o_proj"),
    Architecture("qwen2", ("qwen2",), "model.layers", "self_attn.o_proj"),
    Architecture("qwen3", ("qwen3",), "model.layers", "self_attn.o_proj"),
    Architecture("gemma", ("gemma",), "model.layers", "self_attn.o_proj"),
    Architecture("gemma2", ("gemma2",), "model.layers", "self_attn.o_proj"),
    Architecture("gemma3", ("gemma3_text",), "model.layers", "self_attn.o_proj"),
    Architecture("phi", ("phi",), "model.layers", "self_attn.dense"),
    Architecture("phi3", ("phi3",), "model.layers", "self_attn.o_proj"),
    Architecture("opt", ("opt",), "model.decoder.layers", "self_attn.out_proj", head_dim_attr=None),
    Architecture("gpt_neox", ("gpt_neox",), "gpt_neox.layers", "attention.dense", head_dim_attr=None),
    Architecture("gpt2", ("gpt2",), "transformer.h", "attn.c_proj",
                 n_layers_attr="n_layer", n_heads_attr="n_head", hidden_attr="n_embd", head_dim_attr=None),
    Architecture("gptj", ("gptj",), "transformer.h", "attn.out_proj",
                 n_layers_attr="n_layer", n_heads_attr="n_head", hidden_attr="n_embd", head_dim_attr=None),
)
# Per model type, what a tiny model needs beyond the sizes; qwen3 and the Gemmas get a head_dim
# that is not hidden / heads, as their released checkpoints have.
EXTRA = {
    "llama": dict(intermediate_size=64, num_key_value_heads=2),
    "mistral": dict(intermediate_size=64, num_key_value_heads=2),
    "mixtral": dict(intermediate_size=64, num_key_value_heads=2, num_local_experts=2, num_experts_per_tok=1),
    "qwen2": dict(intermediate_size=64, num_key_value_heads=2),
    "qwen3": dict(intermediate_size=64, num_key_value_heads=2, head_dim=16),
    "gemma": dict(intermediate_size=64, num_key_value_heads=2, head_dim=16),
    "gemma2": dict(intermediate_size=64, num_key_value_heads=2, head_dim=16),
    "gemma3_text": dict(intermediate_size=64, num_key_value_heads=2, head_dim=16),
    "phi": dict(intermediate_size=64),
    "phi3": dict(intermediate_size=64),
    "opt": dict(ffn_dim=64, word_embed_proj_dim=HIDDEN),
    "gpt_neox": dict(intermediate_size=64),
    "gpt2": dict(n_positions=64),
    "gptj": dict(n_positions=64, rotary_dim=4),
}


def tiny_model(arch: Architecture, seed: int = 0) -> torch.nn.Module:
    """A random 2-layer, 4-head model of the architecture's first model type, in eval mode."""
    model_type = arch.model_types[0]
    sizes = {arch.hidden_attr: HIDDEN, arch.n_heads_attr: HEADS, arch.n_layers_attr: LAYERS}
    config = AutoConfig.for_model(model_type, vocab_size=100, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                  max_position_embeddings=64, **sizes, **EXTRA.get(model_type, {}))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # some families initialise biases to zero; make them matter
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_(0, 0.1)
    return model


def input_ids(batch: int = 2, seq: int = 7) -> torch.Tensor:
    return torch.randint(3, 100, (batch, seq), generator=torch.Generator().manual_seed(1))


def out_proj_bias(module: torch.nn.Module) -> torch.Tensor | float:
    base = getattr(module, "base_layer", module)  # a LoRA wrapper keeps the bias in its base layer
    return base.bias if getattr(base, "bias", None) is not None else 0.0


def assert_heads_sum_to_projection(model: torch.nn.Module) -> None:
    """Per-head outputs through project_heads, summed over heads, plus the bias, equal the out proj's output."""
    layout = model_layout(model)
    outputs = {}
    handles = [proj.register_forward_hook(lambda m, a, out, l=l: outputs.__setitem__(l, out))
               for l, proj in enumerate(layout.out_projs)]
    try:
        with torch.no_grad(), record_head_outputs(model) as heads:
            model(input_ids())
    finally:
        for handle in handles:
            handle.remove()
    for layer in range(layout.n_layers):
        seq = heads[layer].shape[1]  # CPM-Ant puts 32 prompt positions before the 7 given
        assert heads[layer].shape == (2, seq, layout.n_heads, layout.head_dim) and seq >= 7
        with torch.no_grad():
            per_head = project_heads(layout, layer, heads[layer])
        assert per_head.shape == (2, seq, layout.n_heads, layout.hidden_size)
        total = per_head.sum(-2) + out_proj_bias(layout.out_projs[layer])
        torch.testing.assert_close(total, outputs[layer], atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module", params=FORMER_TABLE, ids=lambda a: a.name)
def arch_and_model(request):
    return request.param, tiny_model(request.param)


def test_the_structure_gives_the_very_modules_and_sizes_the_former_table_named(arch_and_model, monkeypatch):
    arch, model = arch_and_model
    found = model_layout(model)  # from the structure: no entry covers these types any more
    assert arch.model_types[0] not in {t for entry in ARCHITECTURES for t in entry.model_types}
    monkeypatch.setitem(architectures._REGISTERED, arch.model_types[0], arch)
    table = model_layout(model)  # from the former table's entry
    assert table.architecture is arch
    assert (found.architecture.layers, found.architecture.attention_out) == (arch.layers, arch.attention_out)
    head_dim = EXTRA.get(arch.model_types[0], {}).get("head_dim", HIDDEN // HEADS)
    for layout in (found, table):
        assert (layout.n_layers, layout.n_heads, layout.head_dim, layout.hidden_size) == (LAYERS, HEADS, head_dim,
                                                                                          HIDDEN)
    assert all(a is b for a, b in zip(found.layers, table.layers, strict=True))
    assert all(a is b for a, b in zip(found.out_projs, table.out_projs, strict=True))
    assert found.out_projs[1] is model.get_submodule(f"{arch.layers}.1.{arch.attention_out}")


def test_per_head_outputs_sum_to_the_projection(arch_and_model):
    assert_heads_sum_to_projection(arch_and_model[1])


def test_residual_addition_changes_only_the_last_position(arch_and_model):
    """Holds for layers returning a tensor and for GPT-J's, which return a tuple."""
    _, model = arch_and_model
    ids = input_ids()
    with torch.no_grad():
        clean = model(ids).logits
        with add_to_residual(model, 0, torch.zeros(HIDDEN)):
            same = model(ids).logits
        with add_to_residual(model, 0, torch.full((HIDDEN,), 3.0)):
            steered = model(ids).logits
    assert torch.equal(same, clean)
    assert torch.equal(steered[:, :-1], clean[:, :-1])
    assert not torch.allclose(steered[:, -1], clean[:, -1])


def test_last_token_only_records_one_position(arch_and_model):
    _, model = arch_and_model
    with torch.no_grad(), record_head_outputs(model, [1], last_token_only=True) as heads:
        model(input_ids())
    assert list(heads) == [1] and heads[1].shape[:2] == (2, 1)


def test_lora_wrapped_llama_includes_the_adapter():
    llama = next(a for a in FORMER_TABLE if a.name == "llama")
    base_model = tiny_model(llama)
    w_o = base_model.model.layers[0].self_attn.o_proj.weight.detach().clone()
    model = get_peft_model(base_model, LoraConfig(r=4, lora_alpha=8, target_modules=["o_proj", "q_proj"]))
    model.eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:  # peft starts B at zero, which would make the adapter a no-op
                param.normal_(0, 0.5)
    layout = model_layout(model)
    assert all(isinstance(proj, LoraLayer) for proj in layout.out_projs)
    assert_heads_sum_to_projection(model)

    heads = torch.randn(3, HEADS, HIDDEN // HEADS)
    with torch.no_grad():
        with_adapter = project_heads(layout, 0, heads)
    without_adapter = torch.stack([heads[:, h] @ w_o[:, h * 8:(h + 1) * 8].T for h in range(HEADS)], 1)
    assert not torch.allclose(with_adapter, without_adapter, atol=1e-3)


def test_gpt2_conv1d_projection_matches_its_transposed_weight():
    gpt2 = next(a for a in FORMER_TABLE if a.name == "gpt2")
    layout = model_layout(tiny_model(gpt2))
    heads = torch.randn(5, HEADS, 8)
    weight = layout.out_projs[1].weight  # Conv1D: [in, out]
    expected = torch.stack([heads[:, h] @ weight[h * 8:(h + 1) * 8] for h in range(HEADS)], 1)
    with torch.no_grad():
        torch.testing.assert_close(project_heads(layout, 1, heads), expected, atol=1e-5, rtol=1e-5)


class ToyMixerLM(torch.nn.Module):
    """A causal LM of one's own whose names the finder does not look for: blocks, a mixer, proj_out."""

    def __init__(self, n_layers: int = LAYERS, heads: int = HEADS, width: int = HIDDEN):
        super().__init__()
        self.config = PretrainedConfig(num_hidden_layers=n_layers, num_attention_heads=heads, hidden_size=width)
        self.config.model_type = "toy_mixer"
        self.embed = torch.nn.Embedding(100, width)
        self.blocks = torch.nn.ModuleList(torch.nn.Module() for _ in range(n_layers))
        for block in self.blocks:
            block.mixer = torch.nn.Module()
            block.mixer.mix = torch.nn.Linear(width, width)
            block.mixer.proj_out = torch.nn.Linear(width, width)

    def forward(self, ids):
        hidden = self.embed(ids)
        for block in self.blocks:  # "attention" stands in as a linear mix, enough to carry the hooks
            hidden = hidden + block.mixer.proj_out(block.mixer.mix(hidden))
        return hidden


def test_a_model_whose_heads_cannot_be_found_says_what_was_looked_for_and_how_to_register():
    with pytest.raises(UnsupportedArchitectureError) as error:
        model_layout(ToyMixerLM())
    message = str(error.value)
    assert "'toy_mixer'" in message and "ModuleList of config.num_hidden_layers = 2 decoder layers" in message
    assert "'attn' or 'attention'" in message and "o_proj, out_proj, dense, c_proj, wo" in message
    assert "layer 0 of blocks" in message and "no such child" in message
    assert "register_architecture(Architecture('toy_mixer', ('toy_mixer',), layers=" in message
    assert isinstance(error.value, ValueError)
    stub = torch.nn.Module()
    stub.config = types.SimpleNamespace(model_type="rnn", num_hidden_layers=2, hidden_size=8)
    with pytest.raises(UnsupportedArchitectureError, match="number of heads under none of num_attention_heads"):
        model_layout(stub)


def test_a_registered_layout_is_used_and_checked(monkeypatch):
    monkeypatch.setattr(architectures, "_REGISTERED", {})
    model = ToyMixerLM()
    arch = register_architecture(Architecture("toy mixer", ("toy_mixer",), layers="blocks",
                                              attention_out="mixer.proj_out"))
    layout = model_layout(model)
    assert find_architecture(model) is arch and layout.architecture is arch
    assert (layout.n_layers, layout.n_heads, layout.head_dim, layout.hidden_size) == (LAYERS, HEADS, 8, HIDDEN)
    assert layout.out_projs[1] is model.blocks[1].mixer.proj_out and layout.layers[0] is model.blocks[0]
    assert_heads_sum_to_projection(model)  # the hooks attach where the registration says
    # A registration that names a missing module, or sizes that do not fit, fails loudly.
    register_architecture(Architecture("typo", ("toy_mixer",), layers="blocks", attention_out="mixer.projout"))
    with pytest.raises(UnsupportedArchitectureError, match="attention_out='mixer.projout'.*no such module"):
        model_layout(model)
    register_architecture(arch)
    model.config.head_dim = 16
    with pytest.raises(UnsupportedArchitectureError, match=r"blocks.0.mixer.proj_out takes 32 inputs, not "
                                                           r"n_heads \* head_dim = 4 \* 16"):
        model_layout(model)
    with pytest.raises(TypeError):
        register_architecture("blocks.mixer.proj_out")
    with pytest.raises(ValueError, match="non-empty tuple"):
        register_architecture(Architecture("bad", "toy_mixer", layers="blocks", attention_out="mixer.proj_out"))


def test_out_of_range_layers_and_heads_are_refused_with_the_valid_range():
    llama = next(a for a in FORMER_TABLE if a.name == "llama")
    model = tiny_model(llama)
    layout = model_layout(model)
    assert check_layer(layout, 1) == 1 and check_head(layout, 3) == 3
    with pytest.raises(IndexError, match=r"^layer 7 is out of range: this model has 2 layers \(0\.\.1\)$"):
        check_layer(layout, 7)
    with pytest.raises(IndexError, match=r"^layer -1 is out of range: this model has 2 layers \(0\.\.1\)$"):
        check_layer(layout, -1)
    with pytest.raises(IndexError, match=r"^head 4 is out of range: this model has 4 heads \(0\.\.3\)$"):
        check_head(layout, 4)
    with pytest.raises(IndexError, match="head -2 is out of range"):
        check_head(layout, -2)
    with pytest.raises(IndexError, match="layer 2 is out of range"):
        project_heads(layout, 2, torch.zeros(HEADS, 8))
    with pytest.raises(ValueError, match=r"\[n_heads, head_dim\] = \[4, 8\]"):
        project_heads(layout, 0, torch.zeros(HEADS, 7))


def test_every_model_type_appears_once_in_the_table():
    types_ = [t for arch in ARCHITECTURES for t in arch.model_types]
    assert len(types_) == len(set(types_))


@pytest.mark.parametrize("model_type", causal_lm_types())
def test_every_decoder_only_type_is_found_from_its_structure_or_refused_loudly(model_type):
    """On each type transformers ships (built tiny, random), the layout found is where the heads
    meet: per-head outputs projected and summed give the projection's output. Types without
    attention in every layer are refused with the register_architecture hint, never guessed."""
    built = built_and_laid_out(model_type)
    if built is None:
        return
    model, layout = built
    assert layout.n_layers == len(layout.layers) == len(layout.out_projs) >= 1
    assert_heads_sum_to_projection(model)
