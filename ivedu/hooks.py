"""Context managers that read or change a model's activations during a forward pass.

Three operations cover the method: record each head's output (the instruction vector's raw
material), replace a head's output (causal mediation), and add a vector to the residual
stream (applying an instruction vector). Each ``with`` block attaches torch hooks to the
modules found by :func:`ivedu.architectures.model_layout` and removes them on exit, even when
the block raises. They work on plain and peft-wrapped models, with or without a KV cache
(a cached step is a forward pass of length 1), and on decoder layers that return a tensor
(transformers 5) or a tuple (transformers 4).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch.utils.hooks import RemovableHandle

from ivedu.architectures import ModelLayout, check_layer, model_layout
from ivedu.arguments import check_finite, check_number, check_sequence


@contextmanager
def _removing(handles: list[RemovableHandle]) -> Iterator[None]:
    """Remove every hook in ``handles`` when the block ends, however it ends."""
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _heads_view(layout: ModelLayout, x: torch.Tensor) -> torch.Tensor:
    """An out-proj input ``[batch, seq, n_heads*head_dim]`` viewed per head: ``[batch, seq, n_heads, head_dim]``."""
    width = layout.n_heads * layout.head_dim
    if x.shape[-1] != width:
        raise ValueError(f"the attention output projection received {x.shape[-1]} features, "
                         f"expected n_heads * head_dim = {width}")
    return x.unflatten(-1, (layout.n_heads, layout.head_dim))


def _layer_indices(layout: ModelLayout, layers: Sequence[int] | None) -> list[int]:
    return list(range(layout.n_layers)) if layers is None else [check_layer(layout, l)
                                                                for l in check_sequence("layers", layers)]


@contextmanager
def record_head_outputs(model: torch.nn.Module, layers: Sequence[int] | None = None, *,
                        last_token_only: bool = False, detach: bool = True) -> Iterator[dict[int, torch.Tensor]]:
    """Record each head's output in ``layers`` (all layers by default) during the forward passes in the block.

    Yields a dict that each forward pass fills (a later pass overwrites an earlier one):
    ``layer -> [batch, seq, n_heads, head_dim]``, or ``[batch, 1, n_heads, head_dim]`` with
    ``last_token_only`` (prompts are left-padded, so ``-1`` is every row's last token). These
    are the inputs of the attention output projection, split per head. ``detach=False`` keeps
    the autograd graph, for losses on head outputs.
    """
    layout = model_layout(model)
    store: dict[int, torch.Tensor] = {}

    def hook_for(layer: int) -> Callable[[torch.nn.Module, tuple[Any, ...]], None]:
        def hook(module: torch.nn.Module, args: tuple[Any, ...]) -> None:
            heads = _heads_view(layout, args[0])
            if last_token_only:
                heads = heads[:, -1:].clone()  # a slice alone would keep the whole sequence alive
            store[layer] = heads.detach() if detach else heads
        return hook

    handles = [layout.out_projs[l].register_forward_pre_hook(hook_for(l)) for l in _layer_indices(layout, layers)]
    with _removing(handles):
        yield store


@contextmanager
def edit_head_outputs(model: torch.nn.Module,
                      edits: Mapping[int, Callable[[torch.Tensor], torch.Tensor]]) -> Iterator[None]:
    """Replace head outputs during the forward passes in the block.

    For each ``layer`` in ``edits``, ``edits[layer]`` receives that layer's head outputs
    ``[batch, seq, n_heads, head_dim]`` and returns the tensor (same shape) that the attention
    output projection then receives. The argument is a view of the model's activation: clone
    it before changing it. Returning it unchanged leaves the model's output bit-identical.
    """
    layout = model_layout(model)

    def hook_for(layer: int) -> Callable[[torch.nn.Module, tuple[Any, ...]], tuple[Any, ...]]:
        edit = edits[layer]

        def hook(module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
            heads = _heads_view(layout, args[0])
            edited = edit(heads)
            if not isinstance(edited, torch.Tensor) or edited.shape != heads.shape:
                got = list(edited.shape) if isinstance(edited, torch.Tensor) else type(edited).__name__
                raise ValueError(f"the edit for layer {layer} must return a tensor of shape {list(heads.shape)} "
                                 f"[batch, seq, n_heads, head_dim], got {got}")
            return (edited.flatten(-2),) + tuple(args[1:])
        return hook

    layers = [check_layer(layout, l) for l in edits]  # all checked before any hook is attached
    handles = [layout.out_projs[l].register_forward_pre_hook(hook_for(l)) for l in layers]
    with _removing(handles):
        yield


SITES = ("layer", "attention")


def _positions_slice(positions: str | int | slice | torch.Tensor) -> slice | torch.Tensor:
    """The sequence positions ``positions`` selects: a slice over the seq dimension, or a
    LongTensor ``[batch]`` of one position per row (checked here, used as is)."""
    if isinstance(positions, torch.Tensor):
        if positions.dim() != 1 or positions.dtype not in (torch.int64, torch.int32):
            raise ValueError("positions given as a tensor must be a 1-D integer tensor [batch] of one position "
                             f"per row, got dtype {positions.dtype} and shape {list(positions.shape)}")
        if len(positions) and int(positions.min()) < 0:
            raise ValueError("positions given as a tensor must be non-negative (a row's index from the left); "
                             f"got {int(positions.min())}")
        return positions.long()
    if isinstance(positions, slice):
        return positions
    if positions == "last":
        return slice(-1, None)
    if positions == "all":
        return slice(None)
    if isinstance(positions, int) and not isinstance(positions, bool) and positions >= 0:
        return slice(positions, None)
    raise ValueError(f"positions must be 'last', 'all', a non-negative int, a slice or a LongTensor [batch], "
                     f"got {positions!r}")


def _check_vector(vector: torch.Tensor, hidden: int) -> None:
    if not isinstance(vector, torch.Tensor) or not vector.is_floating_point():
        what = vector.dtype if isinstance(vector, torch.Tensor) else type(vector).__name__
        raise TypeError(f"the vector must be a floating-point tensor, got {what}")
    if vector.dim() not in (1, 2) or vector.shape[-1] != hidden:
        raise ValueError(f"the vector must have shape [hidden] or [batch, hidden] with hidden size {hidden}, "
                         f"got shape {list(vector.shape)}")
    check_finite("vector", vector)


def _add_to_output(output: torch.Tensor | tuple[Any, ...], vector: torch.Tensor, sel: slice | torch.Tensor,
                   scale: float = 1.0) -> torch.Tensor | tuple[Any, ...]:
    """A decoder layer's output with ``scale * vector`` added to hidden states at positions ``sel``.

    ``output`` is the hidden states ``[batch, seq, hidden]`` or a tuple whose element 0 is
    (transformers 4); the result has the same form. ``vector``: ``[hidden]`` or
    ``[batch, hidden]``, cast to the hidden states' dtype and device. ``sel``: a slice of
    positions (the same for every row), or a LongTensor ``[batch]``: row ``b`` gets the
    vector at position ``sel[b]`` only (right-padded training batches, whose last prompt
    token sits at a different index in each row).
    """
    hidden = output[0] if isinstance(output, tuple) else output
    if vector.dim() == 2 and vector.shape[0] != hidden.shape[0]:
        raise ValueError(f"the vector has {vector.shape[0]} rows but the batch has {hidden.shape[0]}")
    seq = hidden.shape[1]
    if isinstance(sel, torch.Tensor):
        return _add_per_row(output, hidden, vector, sel, scale)
    if len(range(seq)[sel]) == 0:
        # With a KV cache a step sees only its new tokens; an int position past them would
        # silently add nothing, so say so instead.
        raise ValueError(f"positions {sel.start}.. select no token of a forward pass of length {seq}; "
                         "with a KV cache use positions='last' on each step")
    delta = scale * vector.to(dtype=hidden.dtype, device=hidden.device)
    delta = delta[:, None, :] if delta.dim() == 2 else delta
    patched = hidden.clone()  # never modify the layer's output in place: autograd may need it
    patched[:, sel] += delta
    return (patched,) + tuple(output[1:]) if isinstance(output, tuple) else patched


def _add_per_row(output: torch.Tensor | tuple[Any, ...], hidden: torch.Tensor, vector: torch.Tensor,
                 rows_positions: torch.Tensor, scale: float) -> torch.Tensor | tuple[Any, ...]:
    """:func:`_add_to_output` with one position per row: row ``b`` at ``rows_positions[b]``."""
    batch, seq = hidden.shape[:2]
    if rows_positions.shape[0] != batch:
        raise ValueError(f"positions has {rows_positions.shape[0]} entries but the batch has {batch} rows: "
                         "give one position per row")
    if len(rows_positions) and int(rows_positions.max()) >= seq:
        raise ValueError(f"position {int(rows_positions.max())} is past the end of a forward pass of length {seq}; "
                         "per-row positions index the full sequence, so use them without a KV cache")
    delta = scale * vector.to(dtype=hidden.dtype, device=hidden.device)
    delta = delta.expand(batch, -1) if delta.dim() == 1 else delta
    patched = hidden.clone()  # never modify the layer's output in place: autograd may need it
    rows = torch.arange(batch, device=hidden.device)
    patched[rows, rows_positions.to(hidden.device)] += delta
    return (patched,) + tuple(output[1:]) if isinstance(output, tuple) else patched


@contextmanager
def add_to_residual(model: torch.nn.Module, layer: int, vector: torch.Tensor, *,
                    positions: str | int | slice | torch.Tensor = "last", scale: float = 1.0,
                    site: str = "layer") -> Iterator[None]:
    """Add ``scale * vector`` to the residual stream in decoder layer ``layer`` in the block.

    ``site`` says where in the layer: ``"layer"``, after the whole decoder layer (where Todd
    et al. add a function vector at evaluation), or ``"attention"``, at the output of the
    layer's attention output projection, before its MLP (where the authors' FV-guided
    training code adds it). Both write into the residual stream; ``"attention"`` lets the
    layer's MLP read the vector, as it reads the heads' own outputs.

    ``vector``: ``[hidden]`` (same for every row) or ``[batch, hidden]`` (one per row). It must
    be floating point (``TypeError`` otherwise); it is cast to the hidden states' dtype and
    device at each pass, so a float32 vector works on a bfloat16 GPU model. ``positions``:
    ``"last"`` (position ``-1``: every row's last token, since prompts are left-padded; on a
    cached step, the new token), ``"all"``, or an int ``t`` for every position ``>= t`` of the
    forward pass (to keep adding to generated tokens when decoding without a KV cache), a
    ``slice`` of positions (``slice(t, t + 1)``: position ``t`` only), or a LongTensor
    ``[batch]`` of one position per row (row ``b`` at ``positions[b]`` only: the last prompt
    token of right-padded training batches, as in IV-guided training).
    """
    layout = model_layout(model)
    check_layer(layout, layer)
    _check_vector(vector, layout.hidden_size)
    check_number("scale", scale)
    sel = _positions_slice(positions)
    if site not in SITES:
        raise ValueError(f"site must be one of {SITES}, got {site!r}")
    module = layout.layers[layer] if site == "layer" else layout.out_projs[layer]

    def hook(module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        return _add_to_output(output, vector, sel, scale)

    with _removing([module.register_forward_hook(hook)]):
        yield
