"""Where the method reads a model: its decoder layers and each layer's attention output projection.

The instruction vector lives in two places of a transformer. Per-head outputs are the INPUT
of a layer's attention output projection (``o_proj`` in Llama), shaped ``[batch, seq,
n_heads * head_dim]`` with head ``h`` at columns ``h*head_dim:(h+1)*head_dim``. The residual
stream is the OUTPUT of a decoder layer.

Model families name these modules differently but build them alike: a ``ModuleList`` of
``config.num_hidden_layers`` decoder layers, each with an attention module (a child named like
``attn`` or ``attention``) whose output projection (``o_proj``, ``out_proj``, ``dense``,
``c_proj`` or ``wo``) takes the heads' outputs. :func:`find_architecture` finds them there, so
any decoder-only Hugging Face LM works with no entry anywhere, and nothing in ``ivedu`` looks at
model names. Where the structure does not decide, an :class:`Architecture` does:
:data:`ARCHITECTURES` for the built-in exceptions, :func:`register_architecture` for a model of
your own. A wrong find fails loudly: the list found must hold the config's number of layers, and
every projection must take ``n_heads * head_dim`` inputs.
"""

from __future__ import annotations

import operator
import weakref
from dataclasses import dataclass

import torch
from peft import PeftModel


class UnsupportedArchitectureError(ValueError):
    """ivedu cannot find a model's decoder layers and attention output projections, or what it
    found (or was told) does not fit the model's config."""


@dataclass(frozen=True)
class Architecture:
    """Where one model family keeps its decoder layers and attention output projections.

    ``layers`` is a dotted path from the causal LM (``LlamaForCausalLM``, not a peft wrapper)
    to the ``ModuleList`` of decoder layers; ``attention_out`` is a dotted path inside one
    decoder layer to the attention output projection. The ``*_attr`` fields name the attributes
    of the (text) config holding the sizes; ``head_dim_attr`` is ``None`` where the model always
    uses ``hidden_size // n_heads`` (a stray ``head_dim`` in such a config must not be trusted).
    """

    name: str
    model_types: tuple[str, ...]
    layers: str
    attention_out: str
    n_layers_attr: str = "num_hidden_layers"
    n_heads_attr: str = "num_attention_heads"
    hidden_attr: str = "hidden_size"
    head_dim_attr: str | None = "head_dim"


# The built-in exceptions: model types whose layout the structure does not decide (every other
# type transformers ships with attention in each layer is found from its structure, and
# tests/test_pipeline_architectures.py runs the method on each). An entry here, or one
# registered with register_architecture, wins over the structure.
ARCHITECTURES: tuple[Architecture, ...] = (
    # CPM-Ant calls its attention block self_att and the projection attention_out.
    Architecture("cpmant", ("cpmant",), "cpmant.encoder.layers", "self_att.self_attention.attention_out",
                 head_dim_attr="dim_head"),
)

_REGISTERED: dict[str, Architecture] = {}
_FOUND: weakref.WeakKeyDictionary[torch.nn.Module, Architecture] = weakref.WeakKeyDictionary()

# What the structure is searched for. Config attributes, first present wins (configs with other
# names, such as GPT-2's n_layer, also answer to the first through their attribute_map).
N_LAYERS_ATTRS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
N_HEADS_ATTRS = ("num_attention_heads", "n_head", "num_heads", "n_heads")
HIDDEN_ATTRS = ("hidden_size", "n_embd", "d_model", "dim")
# The width of one head's output as the projection reads it: v_head_dim where values are narrower
# than queries (DeepSeek's multi-head latent attention), else head_dim (Reformer: attention_head_size),
# else hidden / n_heads.
HEAD_DIM_ATTRS = ("v_head_dim", "head_dim", "attention_head_size")
ATTENTION_NAMES = ("attn", "attention")
OUT_PROJ_NAMES = ("o_proj", "out_proj", "dense", "c_proj", "wo")


def register_architecture(arch: Architecture) -> Architecture:
    """Use ``arch`` for every model whose ``config.model_type`` is in ``arch.model_types``.

    For a model whose layers or projections have names :func:`find_architecture` does not look
    for (or to override what it finds), e.g.::

        register_architecture(Architecture("mymodel", ("mymodel",), layers="model.blocks",
                                           attention_out="mixer.proj_out"))

    A registration lasts for the Python session and replaces an earlier one for the same type;
    :func:`model_layout` still checks it against the config's sizes.
    """
    if not isinstance(arch, Architecture):
        raise TypeError(f"register_architecture takes an Architecture, got {type(arch).__name__}")
    if isinstance(arch.model_types, str) or not arch.model_types:
        raise ValueError(f"Architecture.model_types must be a non-empty tuple of config.model_type names, "
                         f"got {arch.model_types!r}")
    for model_type in arch.model_types:
        _REGISTERED[model_type] = arch
    return arch


def registered_architecture(model_type: str) -> Architecture | None:
    """The layout registered for ``model_type``, else its :data:`ARCHITECTURES` entry, else ``None``."""
    if model_type in _REGISTERED:
        return _REGISTERED[model_type]
    return next((arch for arch in ARCHITECTURES if model_type in arch.model_types), None)


@dataclass(frozen=True)
class ModelLayout:
    """One loaded model's sizes and the modules the hooks attach to.

    ``layers[l]`` is decoder layer ``l``; ``out_projs[l]`` is its attention output
    projection as actually called in the forward pass (the LoRA wrapper when peft wraps it,
    so hooks and :func:`project_heads` include the adapter). ``architecture`` says where they
    were found: a registered or table entry, or one read from the model's structure.
    """

    architecture: Architecture
    n_layers: int
    n_heads: int
    head_dim: int
    hidden_size: int
    layers: tuple[torch.nn.Module, ...]
    out_projs: tuple[torch.nn.Module, ...]


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The causal LM inside a peft wrapper (LoRA layers stay injected in it), or ``model`` itself."""
    return model.get_base_model() if isinstance(model, PeftModel) else model


def text_config(config):
    """The config of a model's language part: ``config`` itself for a plain causal LM."""
    try:
        return config.get_text_config()
    except (AttributeError, ValueError):  # not a PretrainedConfig, or several text configs to choose from
        return config


def find_architecture(model: torch.nn.Module) -> Architecture:
    """Where ``model`` (plain or peft-wrapped) keeps its decoder layers and attention output projections.

    A layout registered for its ``config.model_type`` (:func:`register_architecture`) or in
    :data:`ARCHITECTURES` comes first; otherwise it is read from the structure: the first
    ``ModuleList`` holding the config's number of layers in which every layer has the same
    attention output projection (a child named like ``attn``/``attention`` holding a linear
    layer named like ``o_proj``/``out_proj``/``dense``/``c_proj``/``wo``, the last such one).
    Raises :class:`UnsupportedArchitectureError`, saying what was looked for and how to register
    the layout, when nothing fits: a model without attention in every layer (Mamba, RWKV, hybrids)
    has no heads for the method to read.
    """
    lm = unwrap(model)
    model_type = str(getattr(lm.config, "model_type", None) or type(lm).__name__)
    registered = registered_architecture(model_type)
    if registered is not None:
        return registered
    # The search walks every module (a few milliseconds on a 30-layer model) and every hook asks
    # for the layout, so each model's find is kept while the model lives. LoRA wrapping leaves the
    # paths as they were, and model_layout checks the sizes again at every call.
    if lm not in _FOUND:
        _FOUND[lm] = _find_by_structure(lm, model_type)
    return _FOUND[lm]


def _find_by_structure(lm: torch.nn.Module, model_type: str) -> Architecture:
    config = text_config(lm.config)
    attrs = {}
    for what, names in (("layers", N_LAYERS_ATTRS), ("heads", N_HEADS_ATTRS), ("hidden", HIDDEN_ATTRS)):
        attrs[what] = next((n for n in names if isinstance(_config_value(config, n), int)), None)
        if attrs[what] is None:
            raise _not_found(model_type, f"its config gives the number of {what} under none of {', '.join(names)}")
    head_dim_attr = next((n for n in HEAD_DIM_ATTRS if _config_value(config, n)), None)
    n_layers = getattr(config, attrs["layers"])
    lists = [(name, module) for name, module in lm.named_modules()
             if isinstance(module, torch.nn.ModuleList) and len(module) == n_layers]
    problems = []
    for name, layers in lists:
        paths = [_attention_out(layer) for layer in layers]
        found = {path for path, _ in paths}
        if len(found) == 1 and None not in found:
            return Architecture(model_type, (model_type,), name, found.pop(), attrs["layers"], attrs["heads"],
                                attrs["hidden"], head_dim_attr)
        if len(found) > 1 and None not in found:
            problems.append(f"the layers of {name} put it in different places ({', '.join(sorted(found))})")
        else:
            layer = next(i for i, (path, _) in enumerate(paths) if path is None)
            problems.append(f"layer {layer} of {name} ({type(layers[layer]).__name__}) has {paths[layer][1]}")
    if not lists:
        problems.append(f"no ModuleList holds config.{attrs['layers']} = {n_layers} modules")
    raise _not_found(model_type, "; ".join(problems[:3]), n_layers, attrs["layers"])


def _config_value(config, name: str):
    """``config.name``, or ``None`` where it is missing or refuses to be read as one value (a
    config whose sizes vary per layer raises on the global attribute)."""
    try:
        return getattr(config, name, None)
    except Exception:  # noqa: BLE001 (transformers' per-layer configs raise their own error type)
        return None


def _attention_out(layer: torch.nn.Module) -> tuple[str | None, str]:
    """``(path, "")`` of a decoder layer's attention output projection, or ``(None, what went wrong)``."""
    found = []
    for child_name, child in layer.named_children():
        if not any(word in child_name.lower() for word in ATTENTION_NAMES):
            continue
        projections = [name for name, module in child.named_modules()
                       if name.rsplit(".", 1)[-1].lower() in OUT_PROJ_NAMES and _input_width(module) is not None]
        if projections:
            found.append(f"{child_name}.{projections[-1]}")
    own = [path for path in found if not any(word in path.split(".")[0].lower() for word in ("cross", "encoder"))]
    if len(found) > 1 and len(own) == 1:  # a decoder's cross-attention reads the encoder, not its own heads
        found = own
    if len(found) == 1:
        return found[0], ""
    if found:
        return None, f"several candidates ({', '.join(found)})"
    return None, "no such child"


def _not_found(model_type: str, problem: str, n_layers: int | None = None,
               n_layers_attr: str = "num_hidden_layers") -> UnsupportedArchitectureError:
    count = f"config.{n_layers_attr} = {n_layers}" if n_layers is not None else "the config's number of"
    return UnsupportedArchitectureError(
        f"cannot find the attention heads of this {model_type!r} model: ivedu looks for a torch.nn.ModuleList of "
        f"{count} decoder layers, each with a child named like 'attn' or 'attention' holding an output "
        f"projection (a linear layer) named {', '.join(OUT_PROJ_NAMES)}; here {problem}. A model without "
        f"attention in every layer (Mamba, RWKV, hybrids) has no heads for the method to read. If the "
        f"model has them under other names, say where: ivedu.architectures.register_architecture("
        f"Architecture({model_type!r}, ({model_type!r},), layers='model.layers', attention_out='self_attn.o_proj')) "
        f"with its own paths (model.named_modules() lists them)."
    )


def model_layout(model: torch.nn.Module) -> ModelLayout:
    """Sizes and hook points of a Hugging Face causal LM, plain or peft-wrapped.

    Where they are comes from :func:`find_architecture`. Raises
    :class:`UnsupportedArchitectureError` (a ``ValueError``) when they cannot be found, when a
    registered path does not exist, or when the config's sizes disagree with the modules found:
    the layer count with the list's length, ``n_heads * head_dim`` with any projection's input width.
    """
    lm = unwrap(model)
    arch = find_architecture(lm)
    config = text_config(lm.config)
    n_heads = int(getattr(config, arch.n_heads_attr))
    hidden = int(getattr(config, arch.hidden_attr))
    head_dim = _config_value(config, arch.head_dim_attr) if arch.head_dim_attr else None
    head_dim = int(head_dim or hidden // n_heads)  # some configs carry head_dim=None
    try:
        layers = tuple(lm.get_submodule(arch.layers))
        out_projs = tuple(layer.get_submodule(arch.attention_out) for layer in layers)
    except AttributeError as error:
        raise UnsupportedArchitectureError(f"the layout {arch.name!r} says layers={arch.layers!r}, "
                                           f"attention_out={arch.attention_out!r}, but this model has no such "
                                           f"module ({error}); fix it with register_architecture") from error
    n_layers = int(getattr(config, arch.n_layers_attr))
    if n_layers != len(layers):
        raise UnsupportedArchitectureError(f"config says {n_layers} layers but {arch.layers} holds {len(layers)}; "
                                           f"register the right layout with register_architecture")
    for layer, out_proj in enumerate(out_projs):
        width = _input_width(out_proj)
        if width is not None and width != n_heads * head_dim:
            raise UnsupportedArchitectureError(
                f"{arch.layers}.{layer}.{arch.attention_out} takes {width} inputs, not n_heads * head_dim = "
                f"{n_heads} * {head_dim} (config.{arch.n_heads_attr}, config.{arch.head_dim_attr or arch.hidden_attr}"
                f"{'' if arch.head_dim_attr else ' / n_heads'}), so it is not where this {arch.name!r} model's heads "
                f"meet, or its heads differ from layer to layer; register the right layout with register_architecture")
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
    if not _is_index(index):
        raise TypeError(f"{what} must be a whole number (int), got {index!r} ({type(index).__name__}): "
                        f"pass a {what} index in 0..{count - 1}")
    if not 0 <= index < count:
        raise IndexError(f"{what} {index} is out of range: this model has {count} {what}s (0..{count - 1})")
    return int(index)


def _is_index(value) -> bool:
    """Whether ``value`` is a whole number (an int, a numpy or 0-d torch integer), not a bool."""
    try:
        operator.index(value)
    except TypeError:
        return False
    return not isinstance(value, bool)


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
