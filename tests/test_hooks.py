"""Hooks: identity patches change nothing, edits act only where asked, and hooks never outlive their block."""

import copy
from types import SimpleNamespace

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from ivedu.architectures import model_layout
from ivedu.generation import cache_kwargs, returned_cache
from ivedu.hooks import _add_to_output, add_to_residual, edit_head_outputs, record_head_outputs

HIDDEN, HEADS, HEAD_DIM, LAYERS = 32, 4, 8, 3


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=100, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=LAYERS,
                         num_attention_heads=HEADS, num_key_value_heads=2, max_position_embeddings=64,
                         pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def ids():
    return torch.randint(3, 100, (2, 6), generator=torch.Generator().manual_seed(1))


def logits(model, ids, **kwargs):
    with torch.no_grad():
        return model(ids, **kwargs).logits


def assert_no_hooks(model):
    for name, module in model.named_modules():
        assert not module._forward_pre_hooks and not module._forward_hooks, name


# --- edit_head_outputs -------------------------------------------------------------------------

def test_identity_edit_leaves_logits_bit_identical(model, ids):
    clean = logits(model, ids)
    with edit_head_outputs(model, {l: (lambda heads: heads) for l in range(LAYERS)}):
        assert torch.equal(logits(model, ids), clean)


def test_editing_one_head_at_the_last_token_changes_only_the_last_position(model, ids):
    def zero_head_2_last(heads):
        heads = heads.clone()
        heads[:, -1, 2] = 0
        return heads

    clean = logits(model, ids)
    with edit_head_outputs(model, {1: zero_head_2_last}):
        edited = logits(model, ids)
    assert torch.equal(edited[:, :-1], clean[:, :-1])
    assert not torch.allclose(edited[:, -1], clean[:, -1])


def test_edit_sees_the_recorded_head_outputs(model, ids):
    seen = {}
    with record_head_outputs(model, [2]) as heads, edit_head_outputs(model, {2: lambda h: seen.setdefault(2, h)}):
        logits(model, ids)
    assert seen[2].shape == (2, 6, HEADS, HEAD_DIM)
    assert torch.equal(seen[2], heads[2])


def test_an_edit_of_the_wrong_shape_is_a_clear_error_and_hooks_are_removed(model, ids):
    with pytest.raises(ValueError, match=r"layer 0 must return a tensor of shape \[2, 6, 4, 8\].*got \[2, 6, 4, 7\]"):
        with edit_head_outputs(model, {0: lambda heads: heads[..., :7]}):
            logits(model, ids)
    assert_no_hooks(model)


def test_an_edit_on_a_missing_layer_attaches_nothing(model):
    with pytest.raises(IndexError, match="layer 3 is out of range"):
        with edit_head_outputs(model, {0: lambda h: h, 3: lambda h: h}):
            pass
    assert_no_hooks(model)


@pytest.mark.parametrize("make_context", [
    lambda m: record_head_outputs(m),
    lambda m: edit_head_outputs(m, {0: lambda h: h}),
    lambda m: add_to_residual(m, 1, torch.ones(HIDDEN)),
], ids=["record", "edit", "add"])
def test_hooks_are_removed_even_when_the_block_raises(model, ids, make_context):
    with pytest.raises(RuntimeError, match="boom"):
        with make_context(model):
            logits(model, ids)
            raise RuntimeError("boom")
    assert_no_hooks(model)


def test_recording_with_detach_false_keeps_the_graph(model, ids):
    with record_head_outputs(model, [0], detach=False) as heads:
        model(ids)
    assert heads[0].requires_grad
    heads[0].sum().backward()
    assert model.model.layers[0].self_attn.v_proj.weight.grad is not None
    model.zero_grad(set_to_none=True)


# --- add_to_residual ---------------------------------------------------------------------------

def test_zero_vector_is_the_identity(model, ids):
    clean = logits(model, ids)
    for positions in ("last", "all", 2):
        with add_to_residual(model, 1, torch.zeros(HIDDEN), positions=positions):
            assert torch.equal(logits(model, ids), clean)


@pytest.mark.parametrize("positions, first_changed", [("last", 5), ("all", 0), (3, 3), (0, 0)])
def test_positions_select_where_the_vector_is_added(model, ids, positions, first_changed):
    clean = logits(model, ids)
    with add_to_residual(model, 1, torch.randn(HIDDEN), positions=positions, scale=2.0):
        steered = logits(model, ids)
    assert torch.equal(steered[:, :first_changed], clean[:, :first_changed])
    changed = (steered - clean).abs().amax(-1) > 1e-4  # [batch, seq]
    assert changed[:, first_changed:].all()


def test_adding_after_layer_l_equals_adding_before_layer_l_plus_1(model, ids):
    """An independent route: a hand-written pre-hook on the next layer's input."""
    vector = torch.randn(HIDDEN)

    def pre_hook(module, args, kwargs):
        hidden = args[0].clone()
        hidden[:, -1] += 1.5 * vector
        return (hidden,) + args[1:], kwargs

    handle = model.model.layers[2].register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        manual = logits(model, ids)
    finally:
        handle.remove()
    with add_to_residual(model, 1, vector, scale=1.5):
        torch.testing.assert_close(logits(model, ids), manual, atol=0, rtol=0)


def test_one_vector_per_row(model, ids):
    vectors = torch.randn(2, HIDDEN)
    with add_to_residual(model, 0, vectors):
        both = logits(model, ids)
    for row in range(2):
        with add_to_residual(model, 0, vectors[row]):
            torch.testing.assert_close(both[row], logits(model, ids)[row], atol=1e-5, rtol=1e-5)


def test_a_float64_vector_is_cast_to_the_hidden_states(model, ids):
    vector = torch.randn(HIDDEN)
    with add_to_residual(model, 0, vector):
        expected = logits(model, ids)
    with add_to_residual(model, 0, vector.double()):
        torch.testing.assert_close(logits(model, ids), expected)


def test_bad_vectors_and_positions_are_refused(model, ids):
    with pytest.raises(ValueError, match=r"hidden size 32, got shape \[31\]"):
        with add_to_residual(model, 0, torch.zeros(31)):
            pass
    with pytest.raises(ValueError, match=r"hidden size 32, got shape \[1, 2, 32\]"):
        with add_to_residual(model, 0, torch.zeros(1, 2, HIDDEN)):
            pass
    with pytest.raises(TypeError, match="floating-point"):
        with add_to_residual(model, 0, torch.zeros(HIDDEN, dtype=torch.long)):
            pass
    for bad in ("first", -1, 1.5, True):
        with pytest.raises(ValueError, match="positions must be"):
            with add_to_residual(model, 0, torch.zeros(HIDDEN), positions=bad):
                pass
    with pytest.raises(IndexError, match="layer 3 is out of range: this model has 3 layers"):
        with add_to_residual(model, 3, torch.zeros(HIDDEN)):
            pass
    with pytest.raises(ValueError, match="3 rows but the batch has 2"):
        with add_to_residual(model, 0, torch.zeros(3, HIDDEN)):
            logits(model, ids)
    assert_no_hooks(model)


def test_the_output_helper_handles_tensor_and_tuple_layer_outputs():
    hidden = torch.randn(2, 4, HIDDEN)
    before = hidden.clone()
    vector = torch.randn(HIDDEN)
    as_tensor = _add_to_output(hidden, vector, slice(-1, None), 2.0)
    extra = object()
    as_tuple = _add_to_output((hidden, extra), vector, slice(-1, None), 2.0)
    assert isinstance(as_tensor, torch.Tensor)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 2 and as_tuple[1] is extra
    assert torch.equal(as_tuple[0], as_tensor)
    assert torch.equal(as_tensor[:, :-1], hidden[:, :-1])
    torch.testing.assert_close(as_tensor[:, -1], hidden[:, -1] + 2.0 * vector)
    assert torch.equal(hidden, before)  # the layer's own output is not modified in place


class _TupleReturningLayer(torch.nn.Module):
    """A decoder layer that returns ``(hidden_states, extra)``, as transformers-4 layers and some
    remote-code models do; built here so the test does not depend on what a library release returns."""

    def __init__(self, extras: tuple):
        super().__init__()
        self.extras = extras
        self.self_attn = torch.nn.Module()
        self.self_attn.o_proj = torch.nn.Linear(HIDDEN, HIDDEN)
        self.mix = torch.nn.Linear(HIDDEN, HIDDEN)

    def forward(self, hidden):
        return (hidden + self.self_attn.o_proj(torch.tanh(self.mix(hidden))), *self.extras)


class _TupleReturningModel(torch.nn.Module):
    """A causal-LM-shaped model (``model.layers``, a Llama config) whose loop unpacks each layer's tuple."""

    def __init__(self, extras: tuple):
        super().__init__()
        self.config = LlamaConfig(vocab_size=100, hidden_size=HIDDEN, num_attention_heads=HEADS, num_hidden_layers=2)
        self.model = torch.nn.Module()
        self.model.layers = torch.nn.ModuleList([_TupleReturningLayer(extras) for _ in range(2)])
        self.embed = torch.nn.Embedding(100, HIDDEN)
        self.head = torch.nn.Linear(HIDDEN, 100)
        self.extras = []

    def forward(self, input_ids):
        hidden = self.embed(input_ids)
        self.extras = []
        for layer in self.model.layers:
            hidden, *extra = layer(hidden)
            self.extras.append(tuple(extra))
        return SimpleNamespace(logits=self.head(hidden))


@pytest.mark.parametrize("extras", [(), ("attention weights",)], ids=["(hidden,)", "(hidden, extra)"])
def test_a_model_whose_layers_return_tuples(ids, extras):
    """The vector goes into element 0 of a layer's tuple; the other elements pass through unchanged."""
    torch.manual_seed(0)
    tupled = _TupleReturningModel(extras).eval()
    clean = logits(tupled, ids)
    with add_to_residual(tupled, 0, torch.ones(HIDDEN)):
        steered = logits(tupled, ids)
    assert tupled.extras == [extras, extras]
    assert torch.equal(steered[:, :-1], clean[:, :-1]) and not torch.allclose(steered[:, -1], clean[:, -1])
    assert_no_hooks(tupled)


# --- a cached step: a forward pass of length 1 -------------------------------------------------

def cached_step(model, ids, context=None):
    """Logits of the last token of ``ids`` computed with a KV cache of the tokens before it: [batch, vocab]."""
    with torch.no_grad():
        past = returned_cache(model(ids[:, :-1], use_cache=True))
        if context is None:
            return model(ids[:, -1:], **cache_kwargs(model, past)).logits[:, -1]
        with context:
            return model(ids[:, -1:], **cache_kwargs(model, past)).logits[:, -1]


def test_add_to_residual_on_a_cached_step_matches_the_full_pass(model, ids):
    vector = torch.randn(HIDDEN)
    with add_to_residual(model, 1, vector, positions=5):
        full = logits(model, ids)[:, -1]
    step = cached_step(model, ids, add_to_residual(model, 1, vector, positions="last"))
    torch.testing.assert_close(step, full, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(step, cached_step(model, ids), atol=1e-4)
    with pytest.raises(ValueError, match="KV cache use positions='last'"):
        cached_step(model, ids, add_to_residual(model, 1, vector, positions=5))
    assert_no_hooks(model)


def test_edit_and_record_on_a_cached_step(model, ids):
    assert torch.equal(cached_step(model, ids, edit_head_outputs(model, {0: lambda h: h})), cached_step(model, ids))

    def double_head_1(heads):
        heads = heads.clone()
        heads[:, -1, 1] *= 2
        return heads

    with edit_head_outputs(model, {0: double_head_1}):
        full = logits(model, ids)[:, -1]
    torch.testing.assert_close(cached_step(model, ids, edit_head_outputs(model, {0: double_head_1})), full,
                               atol=1e-5, rtol=1e-5)
    with record_head_outputs(model) as heads:
        cached_step(model, ids)
    assert all(heads[l].shape == (2, 1, HEADS, HEAD_DIM) for l in range(LAYERS))


def test_peft_wrapped_model_is_hooked_through_its_adapter(model, ids):
    wrapped = get_peft_model(copy.deepcopy(model), LoraConfig(r=2, target_modules=["o_proj"])).eval()
    clean = logits(wrapped, ids)
    with edit_head_outputs(wrapped, {1: lambda h: h}), add_to_residual(wrapped, 1, torch.zeros(HIDDEN)):
        assert torch.equal(logits(wrapped, ids), clean)
    with add_to_residual(wrapped, 1, torch.ones(HIDDEN)):
        assert not torch.allclose(logits(wrapped, ids)[:, -1], clean[:, -1])
    assert model_layout(wrapped).out_projs[1] is wrapped.get_base_model().model.layers[1].self_attn.o_proj
    assert_no_hooks(wrapped)


# --- add_to_residual with one position per row ------------------------------------------------

def test_per_row_positions_add_at_each_rows_own_position_only(model, ids):
    """Row b changes from positions[b] on (later tokens read it through attention), never before."""
    clean = logits(model, ids)
    positions = torch.tensor([1, 4])
    with add_to_residual(model, 1, torch.randn(HIDDEN), positions=positions, scale=2.0):
        steered = logits(model, ids)
    changed = (steered - clean).abs().amax(-1) > 1e-4  # [batch, seq]
    for row, t in enumerate(positions.tolist()):
        assert not changed[row, :t].any()
        assert changed[row, t]


def test_per_row_positions_equal_a_slice_per_row(model, ids):
    vector = torch.randn(HIDDEN)
    positions = torch.tensor([2, 5])
    with add_to_residual(model, 0, vector, positions=positions, site="attention"):
        both = logits(model, ids)
    for row, t in enumerate(positions.tolist()):
        with add_to_residual(model, 0, vector, positions=slice(t, t + 1), site="attention"):
            torch.testing.assert_close(both[row], logits(model, ids)[row], atol=1e-5, rtol=1e-5)


def test_per_row_positions_keep_the_gradient_of_the_vector(model, ids):
    vector = torch.randn(HIDDEN, requires_grad=True)
    with add_to_residual(model, 1, vector, positions=torch.tensor([0, 3])):
        model(ids).logits.sum().backward()
    assert vector.grad is not None and vector.grad.abs().sum() > 0


def test_bad_per_row_positions_are_refused(model, ids):
    for bad, message in ((torch.tensor([1, 2, 3]), "3 entries but the batch has 2"),
                         (torch.tensor([1, 6]), "position 6 is past the end"),
                         (torch.tensor([[1], [2]]), "1-D integer tensor"),
                         (torch.tensor([1.0, 2.0]), "1-D integer tensor"),
                         (torch.tensor([-1, 2]), "non-negative")):
        with pytest.raises(ValueError, match=message):
            with add_to_residual(model, 0, torch.zeros(HIDDEN), positions=bad):
                logits(model, ids)
    assert_no_hooks(model)
