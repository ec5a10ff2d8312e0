"""Where the method reads a model: its decoder layers and each layer's attention output projection.

The instruction vector lives in two places of a transformer. Per-head outputs are the INPUT
of a layer's attention output projection (``o_proj`` in Llama), shaped ``[batch, seq,
n_heads * head_dim]`` with head ``h`` at columns ``h*head_dim:(h+1)*head_dim``. The residual
stream is the OUTPUT of a decoder layer. Model families name these modules differently, so
one table, :data:`ARCHITECTURES`, says where they are; nothing else in ``ivedu`` looks at
model names. Supporting a new family is one :class:`Architecture` entry plus one test.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from peft import PeftModel


class UnsupportedArchitectureError(ValueError):
    """The model's ``config.model_type`` has no entry in :data:`ARCHITECTURES`."""


@dataclass(frozen=True)
class Architecture:
    """Where one model family keeps its decoder layers and attention output projections.

    ``layers`` is a dotted path from the causal LM (``LlamaForCausalLM``, not a peft wrapper)
    to the ``ModuleList`` of decoder layers; ``attention_out`` is a dotted path inside one
    decoder layer to the attention output projection. The ``*_attr`` fields name the config
    attributes holding the sizes; ``head_dim_attr`` is ``None`` where the model always uses
    ``hidden_size // n_heads`` (a stray ``head_dim`` in such a config must not be trusted).
    """

    name: str
    model_types: tuple[str, ...]
    layers: str
    attention_out: str
    n_layers_attr: str = "num_hidden_layers"
    n_heads_attr: str = "num_attention_heads"
    hidden_attr: str = "hidden_size"
    head_dim_attr: str | None = "head_dim"


ARCHITECTURES: tuple[Architecture, ...] = (
    Architecture("llama", ("llama",), "model.layers", "self_attn.o_proj"),
    Architecture("mistral", ("mistral",), "model.layers", "self_attn.o_proj"),
    Architecture("mixtral", ("mixtral",), "model.layers", "self_attn.o_proj"),
    Architecture("qwen2", ("qwen2",), "model.layers", "self_attn.o_proj"),
    Architecture("qwen3", ("qwen3",), "model.layers", "self_attn.o_proj"),
    # Gemma's head_dim (256 in the released models) is not hidden_size / n_heads.
    Architecture("gemma", ("gemma",), "model.layers", "self_attn.o_proj"),
    Architecture("gemma2", ("gemma2",), "model.layers", "self_attn.o_proj"),
    Architecture("gemma3", ("gemma3_text",), "model.layers", "self_attn.o_proj"),
    Architecture("phi", ("phi",), "model.layers", "self_attn.dense"),
    Architecture("phi3", ("phi3",), "model.layers", "self_attn.o_proj"),
    Architecture("opt", ("opt",), "model.decoder.layers", "self_attn.out_proj", head_dim_attr=None),
    Architecture("gpt_neox", ("gpt_neox",), "gpt_neox.layers", "attention.dense", head_dim_attr=None),
    # GPT-2's c_proj is a Conv1D: its weight is [in, out], the transpose of nn.Linear's.
    Architecture("gpt2", ("gpt2",), "transformer.h", "attn.c_proj",
                 n_layers_attr="n_layer", n_heads_attr="n_head", hidden_attr="n_embd", head_dim_attr=None),
    Architecture("gptj", ("gptj",), "transformer.h", "attn.out_proj",
                 n_layers_attr="n_layer", n_heads_attr="n_head", hidden_attr="n_embd", head_dim_attr=None),
)


@dataclass(frozen=True)
class ModelLayout:
    """One loaded model's sizes and the modules the hooks attach to.

    ``layers[l]`` is decoder layer ``l``; ``out_projs[l]`` is its attention output
    projection as actually called in the forward pass (the LoRA wrapper when peft wraps it,
    so hooks and :func:`project_heads` include the adapter).
    """

    architecture: Architecture
    n_layers: int
    n_heads: int
    head_dim: int
    hidden_size: int
    layers: tuple[torch.nn.Module, ...]
    out_projs: tuple[torch.nn.Module, ...]


def supported_model_types() -> list[str]:
    """Every ``config.model_type`` covered by :data:`ARCHITECTURES`, sorted."""
    return sorted(t for arch in ARCHITECTURES for t in arch.model_types)


def find_architecture(model_type: str) -> Architecture:
    """The table entry covering ``model_type``, or :class:`UnsupportedArchitectureError`."""
    for arch in ARCHITECTURES:
        if model_type in arch.model_types:
            return arch
    raise UnsupportedArchitectureError(
        f"model_type {model_type!r} is not supported; supported model types: {', '.join(supported_model_types())}. "
        "To add one, append an Architecture entry (paths to its decoder layers and attention output "
        "projection) to ARCHITECTURES in ivedu/architectures.py, and one test case in tests/test_architectures.py."
    )


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The causal LM inside a peft wrapper (LoRA layers stay injected in it), or ``model`` itself."""
    return model.get_base_model() if isinstance(model, PeftModel) else model


def model_layout(model: torch.nn.Module) -> ModelLayout:
    """Sizes and hook points of a Hugging Face causal LM, plain or peft-wrapped.

    Raises :class:`UnsupportedArchitectureError` for a model type missing from the table,
    and ``ValueError`` when the config's sizes disagree with the modules found.
    """
    lm = unwrap(model)
    arch = find_architecture(lm.config.model_type)
    config = lm.config
    n_heads = int(getattr(config, arch.n_heads_attr))
    hidden = int(getattr(config, arch.hidden_attr))
    head_dim = getattr(config, arch.head_dim_attr, None) if arch.head_dim_attr else None
    head_dim = int(head_dim or hidden // n_heads)  # some configs carry head_dim=None
    layers = tuple(lm.get_submodule(arch.layers))
    out_projs = tuple(layer.get_submodule(arch.attention_out) for layer in layers)
    n_layers = int(getattr(config, arch.n_layers_attr))
    if n_layers != len(layers):
        raise ValueError(f"config says {n_layers} layers but {arch.layers} holds {len(layers)}")
    width = _input_width(out_projs[0])
    if width is not None and width != n_heads * head_dim:
        raise ValueError(f"{arch.attention_out} takes {width} inputs, not n_heads * head_dim = "
                         f"{n_heads} * {head_dim}; check the {arch.name!r} entry of ARCHITECTURES")
    return ModelLayout(arch, n_layers, n_heads, head_dim, hidden, layers, out_projs)


def _input_width(module: torch.nn.Module) -> int | None:
    """Input features of a linear layer: ``in_features`` (nn.Linear, peft LoRA) or ``nx`` (Conv1D)."""
    width = getattr(module, "in_features", None) or getattr(module, "nx", None)
    return int(width) if width is not None else None


def check_layer(layout: ModelLayout, layer: int) -> int:
    """``layer`` if it is a valid layer index (0..n_layers-1); negative indices are rejected."""
    return _check_index(layer, layout.n_layers, "layer")


def check_head(layout: ModelLayout, head: int) -> int:
    """``head`` if it is a valid head index (0..n_heads-1); negative indices are rejected."""
    return _check_index(head, layout.n_heads, "head")


def _check_index(index: int, count: int, what: str) -> int:
    # Negative indices are refused: a head map indexed "-1" reads as a bug, not as "the last".
    if not 0 <= index < count:
        raise IndexError(f"{what} {index} is out of range: this model has {count} {what}s (0..{count - 1})")
    return int(index)


def project_heads(layout: ModelLayout, layer: int, heads: torch.Tensor) -> torch.Tensor:
    """Each head's contribution to the residual stream through layer ``layer``'s output projection.

    ``heads``: ``[..., n_heads, head_dim]`` per-head outputs (as recorded by
    :func:`ivedu.hooks.record_head_outputs`). Returns ``[..., n_heads, hidden]``: row ``h`` is
    the projection of an input that is zero except head ``h``'s slice, without the bias, so the
    rows summed plus the bias give the projection's output. The module itself is called (not
    its weight read), so this works for nn.Linear, GPT-2's Conv1D and LoRA wrappers alike, the
    adapter's delta included. It assumes the projection is affine, which holds in eval mode
    (LoRA dropout off).
    """
    check_layer(layout, layer)
    n, d = layout.n_heads, layout.head_dim
    if heads.shape[-2:] != (n, d):
        raise ValueError(f"heads must end in [n_heads, head_dim] = [{n}, {d}], got shape {list(heads.shape)}")
    out_proj = layout.out_projs[layer]
    eye = torch.eye(n, dtype=heads.dtype, device=heads.device)
    # Row r of the block-diagonal input keeps only head r: [..., n_heads, n_heads * head_dim].
    block = (heads.unsqueeze(-3) * eye[:, :, None]).flatten(-2)
    # .forward skips module hooks, so projecting inside a hook context does not trigger them.
    bias = out_proj.forward(torch.zeros_like(block[..., :1, :]))
    return out_proj.forward(block) - bias
