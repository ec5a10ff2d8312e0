"""Every decoder-only model type the installed transformers ships, as a tiny random causal LM.

The layout finder (``ivedu.architectures``) must work on any decoder-only Hugging Face LM, so
the architecture and pipeline tests run on every type in transformers'
``MODEL_FOR_CAUSAL_LM_MAPPING_NAMES`` that can be built small here. :func:`tiny_causal_lm`
builds one (2 layers, 4 heads, hidden 32) or raises :class:`Unbuildable` with the reason, one of
:data:`SKIP_REASONS`. Types without the same attention heads in every layer (none, only in some
layers, or heads a layout cannot describe) must be refused by the finder: :data:`REFUSED` lists
them with why. The other lists name what a type cannot do beyond its layout.

``python tests/model_types.py`` prints every type's outcome and the counts.
"""

from __future__ import annotations

import sys
import warnings
from collections import Counter

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from ivedu.architectures import UnsupportedArchitectureError, model_layout

HIDDEN, HEADS, LAYERS = 32, 4, 2
MAX_PARAMS = 3_000_000  # a tiny config past this kept some size we do not know how to shrink

# Sizes every type gets where its config has the attribute (and it can be set): small
# everywhere, with head_dim = hidden / heads unless a type says otherwise.
SIZES = dict(
    num_hidden_layers=LAYERS, hidden_size=HIDDEN, num_attention_heads=HEADS, num_key_value_heads=2,
    head_dim=HIDDEN // HEADS, intermediate_size=64, ffn_dim=64, n_inner=64, dim_ff=64, dim_head=HIDDEN // HEADS,
    moe_intermediate_size=32, shared_expert_intermediate_size=32, num_experts=4, num_local_experts=4,
    n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1, n_group=1, topk_group=1,
    kv_lora_rank=16, q_lora_rank=16, qk_rope_head_dim=4, qk_nope_head_dim=4, v_head_dim=HIDDEN // HEADS,
    rotary_dim=4, max_position_embeddings=128, n_positions=128,
)
# What a type needs beyond SIZES to build small and run. A type whose released models differ
# from layer to layer stays so here (Gemma 4's full-attention layers keep a wider head).
_INDEXER = dict(index_head_dim=8, index_n_heads=2, index_topk=4)
_MAMBA = dict(mamba_n_heads=4, mamba_d_head=16, mamba_d_state=16, mamba_chunk_size=16)
_PER_LAYER_INPUT = dict(vocab_size_per_layer_input=100, hidden_size_per_layer_input=8)
OVERRIDES: dict[str, dict] = {
    "axk2": _INDEXER, "deepseek_v32": _INDEXER, "glm_moe_dsa": _INDEXER,
    "deepseek_v4": dict(_INDEXER, o_groups=2, o_lora_rank=8, hc_mult=2),
    "bamba": _MAMBA, "granitemoehybrid": _MAMBA, "mamba2": dict(num_heads=8),
    "dots3_note_text": dict(num_key_value_heads=HEADS),
    "gemma3n_text": dict(_PER_LAYER_INPUT, num_kv_shared_layers=0, laurel_rank=4, altup_num_inputs=2,
                         intermediate_size=[64] * LAYERS),
    "cohere_compass_text": dict(rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1e4}}),
    "dbrx": dict(d_model=HIDDEN, n_heads=HEADS, n_layers=LAYERS, max_seq_len=128,
                 attn_config={"kv_n_heads": 2, "rope_theta": 1e4, "clip_qkv": 8.0},
                 ffn_config={"ffn_hidden_size": 64, "moe_num_experts": 4, "moe_top_k": 1}),
    # Reformer trains only on lengths that are a multiple of its chunk length.
    "reformer": dict(axial_pos_embds=False, attn_layers=["local", "local"], local_attn_chunk_length=1),
    "qwen4_exp_text": dict(indexer_n_heads=2, indexer_kv_heads=1, indexer_head_dim=8, indexer_budget=4,
                           indexer_compress_ratio=2, hc_lowrank=8, ple_embed_dim=8, ngram_vocab_size_base=100,
                           heads_per_ngram=2, split_ngram_parts=2, linear_key_head_dim=8, linear_value_head_dim=8,
                           linear_num_key_heads=2, linear_num_value_heads=4),
    "gemma4_text": dict(_PER_LAYER_INPUT, per_layer_config={"01": {"head_dim": 16}}),
    "gemma4_unified_text": dict(per_layer_config={"01": {"head_dim": 16}}),
    "inkling_text": dict(swa_num_attention_heads=HEADS, swa_num_key_value_heads=2, swa_head_dim=8, rel_extent=16),
    "inkling2_text": dict(swa_num_attention_heads=HEADS, swa_num_key_value_heads=2, swa_head_dim=8, rel_extent=16),
    "inkling2_loop_text": dict(swa_num_attention_heads=HEADS, swa_num_key_value_heads=2, swa_head_dim=8,
                               rel_extent=16),
    "laguna": dict(num_attention_heads_per_layer=[HEADS] * LAYERS),
    # The default configs are all attention; the released LFM2 models mix in convolution layers.
    "lfm2": dict(layer_types=["conv", "full_attention"]),
    "lfm2_moe": dict(layer_types=["conv", "full_attention"]),
    "roc_bert": dict(pronunciation_embed_dim=8, pronunciation_vocab_size=16, shape_embed_dim=8, shape_vocab_size=16),
    "xlnet": dict(d_head=HIDDEN // HEADS),
    "zaya": dict(num_experts_per_tok=1),
    "longcat_flash": dict(num_layers=LAYERS),
}

# Types the layout finder must refuse (UnsupportedArchitectureError), and why: the method reads
# the same heads in every layer, which these do not have.
_HYBRID = "attention in only some layers (the others are state-space, convolution or linear attention)"
REFUSED: dict[str, str] = {
    **{t: "no attention at all (a state-space or recurrent model)"
       for t in ("mamba", "mamba2", "falcon_mamba", "rwkv", "xlstm")},
    **{t: _HYBRID for t in ("bamba", "bailing_hybrid", "granitemoehybrid", "jamba", "kimi_linear",
                            "lara_mini", "lfm2", "lfm2_moe", "lfm3", "minimax", "nemotron_h", "olmo_hybrid",
                            "qwen3_5_moe_text", "qwen3_5_text", "qwen3_next", "qwen4_exp_text", "recurrent_gemma",
                            "zamba", "zamba2")},
    "gemma4_text": "a wider head in the full-attention layers than in the sliding ones",
    "gemma4_unified_text": "a wider head in the full-attention layers than in the sliding ones",
    "hrm_text": "two stacks of layers run in cycles, so no one list holds config.num_hidden_layers layers",
    "inkling2_text": "a gated output projection that is not a linear layer",
    "inkling2_loop_text": "a gated output projection that is not a linear layer",
    "jetmoe": "a mixture of attention heads: heads are experts routed per token, with no output projection",
    "longcat_flash": "two attention modules in each layer",
    "deepseek_v4": "a grouped two-stage output projection (o_a_proj, o_b_proj)",
    "xlm": "no module per layer: attentions, norms and feed-forward blocks sit in separate lists",
    "xlnet": "relative attention whose output projection is a bare weight, not a linear layer",
}

# Types whose layout is found but whose cache the head scan (ivedu.mediation) cannot reuse: it
# runs each prompt once and continues its key-value cache under each head's patch. The pipeline
# test builds their vector from the mean head outputs instead, and runs the rest.
NO_KV_CACHE: dict[str, str] = {
    **{t: "returns no key-value cache" for t in ("cpmant", "granitemoe", "granitemoe_swa", "granitemoeshared",
                                                  "openai-gpt", "reformer")},
    **{t: "its cache of extra per-token states does not continue from a copied prompt"
       for t in ("falcon_h1", "inkling_text", "zaya")},
}
# Types peft cannot train: the pipeline test stops before their LoRA step.
NO_LORA: dict[str, str] = {
    "reformer": "its reversible layers recompute activations outside autograd, so LoRA's weights get no gradient",
}
# Types the installed transformers cannot run as ivedu calls them, whatever the layout.
FAILS_IN_TRANSFORMERS: dict[str, str] = {
    "dory": "its attention fails on a left-padded batch (an attention mask) in transformers itself",
}

SKIP_REASONS = ("encoder-decoder", "multimodal or composite", "needs extra packages", "tiny config cannot be built",
                "fails in transformers itself")


class Unbuildable(Exception):
    """A type the tests cannot build small here; ``reason`` is one of :data:`SKIP_REASONS`."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def causal_lm_types() -> list[str]:
    """Every model type with a causal-LM class in the installed transformers, sorted."""
    return sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def _settable(config, name: str) -> bool:
    try:
        present = hasattr(config, name)
    except Exception:  # noqa: BLE001 (a per-layer attribute refuses to be read globally: it is there)
        present = True
    return present and not isinstance(getattr(type(config), name, None), property)


def _per_layer_lists(config, n_layers: int) -> dict[str, list]:
    """The config's per-layer lists (``layer_types`` and the like) cut to ``LAYERS`` entries that keep
    its first two kinds of layer, so a hybrid stays a hybrid when it is made small."""
    lists = {}
    for name, value in vars(config).items():
        if isinstance(value, list) and len(value) == n_layers and n_layers > LAYERS and _settable(config, name):
            kinds = list(dict.fromkeys(map(str, value)))
            firsts = [value[[str(v) for v in value].index(k)] for k in kinds[:LAYERS]]
            lists[name] = (firsts * LAYERS)[:LAYERS]
    return lists


def tiny_config(model_type: str, *, vocab_size: int = 100, pad_token_id: int = 0, bos_token_id: int = 1,
                eos_token_id: int = 2, positions: int = 128, **extra):
    """A small config of ``model_type``, or :class:`Unbuildable`."""
    try:
        default = AutoConfig.for_model(model_type)
    except Exception as error:  # noqa: BLE001
        raise Unbuildable("tiny config cannot be built", f"{type(error).__name__}: {error}") from None
    if getattr(default, "is_encoder_decoder", False):
        raise Unbuildable("encoder-decoder", model_type)
    try:
        text = default.get_text_config()
    except ValueError:
        text = None
    parts = list(getattr(default, "sub_configs", None) or {})
    if text is not default or any(word in part for part in parts for word in ("vision", "audio", "image", "vq")):
        raise Unbuildable("multimodal or composite", f"{model_type}: {', '.join(parts)}")
    try:
        n_layers = default.num_hidden_layers
    except Exception:  # noqa: BLE001
        n_layers = None
    sizes = {**SIZES, "max_position_embeddings": positions, "n_positions": positions}
    kwargs = {name: value for name, value in sizes.items() if _settable(default, name)}
    if _settable(default, "qk_rope_head_dim"):  # multi-head latent attention: its own head sizes
        kwargs.pop("head_dim", None)
        kwargs["num_key_value_heads"] = HEADS
    if _settable(default, "is_decoder"):
        kwargs["is_decoder"] = True  # BERT-like encoders are causal LMs only as decoders
    kwargs.update(_per_layer_lists(default, n_layers) if isinstance(n_layers, int) else {})
    if _settable(default, "unpadded_vocab_size"):
        kwargs["unpadded_vocab_size"] = vocab_size
    kwargs.update(vocab_size=vocab_size, pad_token_id=pad_token_id, bos_token_id=bos_token_id,
                  eos_token_id=eos_token_id)
    kwargs.update(OVERRIDES.get(model_type, {}))
    kwargs.update(extra)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return AutoConfig.for_model(model_type, **kwargs)
    except Exception as error:  # noqa: BLE001
        raise Unbuildable("tiny config cannot be built", f"{type(error).__name__}: {error}") from None


def tiny_causal_lm(model_type: str, seed: int = 0, **config_kwargs) -> torch.nn.Module:
    """A random tiny causal LM of ``model_type`` in eval mode, or :class:`Unbuildable`."""
    config = tiny_config(model_type, **config_kwargs)
    try:
        with torch.device("meta"):
            params = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
        if params > MAX_PARAMS:
            raise Unbuildable("tiny config cannot be built", f"{params:,} parameters")
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config).eval()
        if hasattr(model, "set_default_language"):  # X-MOD's adapters are per language
            model.set_default_language(config.languages[0])
        return model
    except ImportError as error:
        raise Unbuildable("needs extra packages", str(error).splitlines()[0]) from None
    except Unbuildable:
        raise
    except Exception as error:  # noqa: BLE001
        raise Unbuildable("tiny config cannot be built", f"{type(error).__name__}: {error}") from None


def built_and_laid_out(model_type: str, **config_kwargs):
    """``(model, layout)`` of a tiny ``model_type`` for a test; the test is skipped where the type
    cannot be built here, and ``None`` is returned for a type :data:`REFUSED` once its refusal
    is checked to be loud (the ``register_architecture`` hint)."""
    try:
        model = tiny_causal_lm(model_type, **config_kwargs)
    except Unbuildable as error:
        pytest.skip(str(error))
    if model_type in REFUSED:
        with pytest.raises(UnsupportedArchitectureError, match="register_architecture"):
            model_layout(model)
        return None
    return model, model_layout(model)


def outcome(model_type: str) -> str:
    """What the tests do with ``model_type``: ``"refused"``, ``"runs"`` (perhaps ``"without the
    scan"`` or ``"LoRA"``), or the reason it is skipped (one of :data:`SKIP_REASONS`). It builds
    the model, so it also says whether the type can be built here."""
    try:
        tiny_causal_lm(model_type)
    except Unbuildable as error:
        return error.reason
    if model_type in REFUSED:
        return "refused"
    if model_type in FAILS_IN_TRANSFORMERS:
        return "fails in transformers itself"
    missing = [what for what, types in (("the scan", NO_KV_CACHE), ("LoRA", NO_LORA)) if model_type in types]
    return "runs" + (f" without {' or '.join(missing)}" if missing else "")


if __name__ == "__main__":
    from transformers.utils import logging

    logging.set_verbosity_error()
    warnings.simplefilter("ignore")
    counts = Counter()
    for model_type in sys.argv[1:] or causal_lm_types():
        what = outcome(model_type)
        counts[what] += 1
        print(f"{model_type:28s} {what}", flush=True)
    print(f"{sum(counts.values())} types: " + ", ".join(f"{n} {what}" for what, n in counts.most_common()))
