"""Saving and loading what the method produces: instruction vectors, head scans, LoRA adapters.

A saved artifact is reused in another notebook, on another day, perhaps with another model,
so it carries where it came from, and loading it checks that it fits the model at hand.

- An instruction vector or a scan is a pair of files, ``NAME.safetensors`` (the tensors)
  and ``NAME.json`` (the metadata, readable without torch). The same metadata is also
  stored in the safetensors header, which is the copy that counts: a pair whose two copies
  disagree (a save interrupted between its two files) is refused.
- An adapter is a folder: peft's own ``adapter_model.safetensors`` and
  ``adapter_config.json``, plus ``ivedu.json``.

Metadata: ``kind`` (``"instruction_vector"``, ``"scan"`` or ``"adapter"``), ``format``,
``ivedu_version``, ``model_id``, the model's ``hidden_size``, ``n_layers``, ``n_heads``,
``head_dim``, and ``layer``, ``task``, ``heads``, ``dtype`` where they apply (``null``
otherwise).

Every write goes to a temporary file or folder next to the destination, which then
replaces the destination in one ``os.replace``; if anything fails (or the run is
interrupted) the temporary is removed and any earlier artifact stays as it was. Nothing is
pickled: tensors are read with safetensors, never with ``torch.load``.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import safetensors
import safetensors.torch
import torch
from peft import PeftModel

from ivedu.architectures import ModelLayout, check_layer, model_layout
from ivedu.intervention import InstructionVector
from ivedu.mediation import HeadScan
from ivedu.runtime import peft_quietly

FORMAT = 1  # raise when the layout of a saved artifact changes; loading refuses newer formats
KINDS = {"instruction_vector": "load_vector", "scan": "load_scan", "adapter": "load_adapter"}
ADAPTER_METADATA = "ivedu.json"
SIZE_FIELDS = (("hidden_size", "hidden size"), ("n_layers", "number of layers"),
               ("n_heads", "number of heads"), ("head_dim", "head size"))


# --- paths and atomic writes -------------------------------------------------------------------

def _pair(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(NAME.safetensors, NAME.json)`` for ``NAME``, ``NAME.safetensors`` or ``NAME.json``."""
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


def _atomic_file(dest: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``dest``, then move it onto ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:  # on disk before it takes the real name
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    finally:  # BaseException too: a KeyboardInterrupt mid-write leaves no temporary behind
        tmp.unlink(missing_ok=True)


def _atomic_folder(dest: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary folder beside ``dest``, then put it in ``dest``'s place.

    A folder cannot replace a non-empty folder in one step, so an existing ``dest`` is first
    renamed aside and deleted only once the new folder is in place (and put back if that fails).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f"{dest.name}.tmp-"))
    old = None
    try:
        write(tmp)
        if dest.exists():
            old = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f"{dest.name}.old-"))
            os.replace(dest, old / dest.name)
        try:
            os.replace(tmp, dest)
        except BaseException:
            if old is not None:
                os.replace(old / dest.name, dest)
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _save_pair(path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    weights, sidecar = _pair(path)
    text = json.dumps(meta, indent=2)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    # Tensors first, then the sidecar: an interruption in between leaves a pair that
    # disagrees, which loading refuses, never a silently mixed one.
    _atomic_file(weights, lambda tmp: safetensors.torch.save_file(tensors, str(tmp), metadata={"ivedu": text}))
    _atomic_file(sidecar, lambda tmp: tmp.write_text(text + "\n"))
    return weights


def _load_pair(path, kind: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    weights, sidecar = _pair(path)
    if Path(path).is_dir() and (Path(path) / ADAPTER_METADATA).exists():
        _check_kind(json.loads((Path(path) / ADAPTER_METADATA).read_text()), kind, Path(path))
    if not weights.exists():
        raise FileNotFoundError(f"no artifact at {weights}: save one with {KINDS[kind].replace('load', 'save')}")
    with safetensors.safe_open(str(weights), framework="pt") as f:
        header = (f.metadata() or {}).get("ivedu")
        tensors = {key: f.get_tensor(key) for key in f.keys()}
    if header is None:
        raise ValueError(f"{weights} has no ivedu metadata: it was not written by ivedu.artifacts")
    meta = json.loads(header)
    if sidecar.exists() and json.loads(sidecar.read_text()) != meta:
        raise ValueError(f"{weights} and {sidecar} disagree (a save was interrupted between the two files, or "
                         "one was replaced by hand): save the artifact again")
    _check_kind(meta, kind, weights)
    return tensors, meta


# --- metadata ------------------------------------------------------------------------------------

def _metadata(kind: str, layout: ModelLayout, model_id: str, **fields: Any) -> dict[str, Any]:
    import ivedu  # here, not at import time: ivedu/__init__ may be importing this module

    if not isinstance(model_id, str) or not model_id:
        raise ValueError("model_id must name the model (a hub id, a folder, or 'tiny')")
    meta = {"kind": kind, "format": FORMAT, "ivedu_version": ivedu.__version__, "model_id": model_id,
            "hidden_size": layout.hidden_size, "n_layers": layout.n_layers, "n_heads": layout.n_heads,
            "head_dim": layout.head_dim, "layer": None, "task": None, "heads": None, "dtype": None}
    meta.update(fields)
    return meta


def _check_kind(meta: dict[str, Any], kind: str, where: Path) -> None:
    found = meta.get("kind")
    if found != kind:
        loader = KINDS.get(found)
        hint = f": load it with ivedu.artifacts.{loader}" if loader else ""
        raise ValueError(f"{where} holds {_what(found)}, not {_what(kind)}{hint}")
    if meta.get("format", FORMAT) > FORMAT:
        raise ValueError(f"{where} was saved by a newer ivedu ({meta.get('ivedu_version')}, format "
                         f"{meta['format']}); upgrade ivedu to load it")


def _what(kind: str | None) -> str:
    return {"instruction_vector": "an instruction vector", "scan": "a head scan",
            "adapter": "an adapter"}.get(kind, f"an artifact of unknown kind {kind!r}")


# For each kind: what it is called, how it came from a model, and how to make a new one.
_ORIGIN = {"instruction_vector": ("vector", "extracted from", "re-extract it for this model"),
           "scan": ("scan", "computed on", "scan this model again"),
           "adapter": ("adapter", "trained on", "fine-tune this model instead")}


def check_artifact_fits(meta: dict[str, Any], model) -> None:
    """Raise ``ValueError`` unless the artifact described by ``meta`` fits ``model``.

    Compares the hidden size, layers, heads and head size recorded at saving with
    ``model``'s, and checks the vector's layer is one of ``model``'s layers.
    """
    layout = model_layout(model)
    what, verb, fix = _ORIGIN[meta["kind"]]
    for key, words in SIZE_FIELDS:
        saved, given = meta[key], getattr(layout, key)
        if saved != given:
            raise ValueError(f"this {what} was {verb} a model with {words} {saved} ({meta['model_id']}); "
                             f"the given model has {given}: {fix}")
    if meta.get("layer") is not None:
        check_layer(layout, meta["layer"])


# --- instruction vectors -------------------------------------------------------------------------

def save_vector(path, iv: InstructionVector, model, *, layer: int, model_id: str) -> Path:
    """Save ``iv`` (float32) and its metadata as ``NAME.safetensors`` + ``NAME.json``.

    ``layer`` is where the vector is meant to be added (the layer chosen on valid);
    ``model`` is the model it was extracted from (for its sizes). Returns the
    ``.safetensors`` path.
    """
    layout = model_layout(model)
    check_layer(layout, layer)
    vector = iv.vector
    if not isinstance(vector, torch.Tensor) or vector.shape != (layout.hidden_size,):
        got = list(vector.shape) if isinstance(vector, torch.Tensor) else type(vector).__name__
        raise ValueError(f"the vector must have shape [hidden] = [{layout.hidden_size}] for this model, got {got}")
    meta = _metadata("instruction_vector", layout, model_id, layer=int(layer), task=iv.task,
                     heads=[[int(l), int(h)] for l, h in iv.heads], dtype="float32")
    return _save_pair(path, {"vector": vector.float()}, meta)


def load_vector(path, model=None) -> tuple[InstructionVector, dict[str, Any]]:
    """``(vector, metadata)`` from :func:`save_vector`; with ``model``, check it fits first.

    The vector is float32 on the CPU (``add_to_residual`` casts it to the model's dtype and
    device); ``metadata["layer"]`` is the layer it was saved for.
    """
    tensors, meta = _load_pair(path, "instruction_vector")
    if model is not None:
        check_artifact_fits(meta, model)
    iv = InstructionVector(meta["task"], tensors["vector"], tuple((l, h) for l, h in meta["heads"]))
    return iv, meta


# --- scans ---------------------------------------------------------------------------------------

def save_scan(path, scan: HeadScan, model, *, model_id: str) -> Path:
    """Save a :class:`~ivedu.mediation.HeadScan` (effects and mean activations, float32)."""
    layout = model_layout(model)
    expected = (layout.n_layers, layout.n_heads)
    if tuple(scan.effects.shape) != expected or tuple(scan.mean_activations.shape) != (*expected, layout.head_dim):
        raise ValueError(f"the scan does not fit this model: effects {list(scan.effects.shape)} and mean activations "
                         f"{list(scan.mean_activations.shape)}, expected [{layout.n_layers}, {layout.n_heads}] and "
                         f"[{layout.n_layers}, {layout.n_heads}, {layout.head_dim}]")
    meta = _metadata("scan", layout, model_id, task=scan.task, dtype="float32",
                     corrupted_prob=float(scan.corrupted_prob), clean_prob=float(scan.clean_prob))
    return _save_pair(path, {"effects": scan.effects.float(), "mean_activations": scan.mean_activations.float()}, meta)


def load_scan(path, model=None) -> tuple[HeadScan, dict[str, Any]]:
    """``(scan, metadata)`` from :func:`save_scan`; with ``model``, check it fits first."""
    tensors, meta = _load_pair(path, "scan")
    if model is not None:
        check_artifact_fits(meta, model)
    scan = HeadScan(meta["task"], tensors["effects"], tensors["mean_activations"],
                    corrupted_prob=meta["corrupted_prob"], clean_prob=meta["clean_prob"])
    return scan, meta


# --- adapters ------------------------------------------------------------------------------------

def save_adapter(path, peft_model, *, model_id: str, task: str) -> Path:
    """Save a peft model's adapter (peft's ``save_pretrained``, safetensors) and ``ivedu.json``
    into the folder ``path``, replacing any earlier one only once complete.

    ``model_id`` names the base model the adapter was trained on; ``task`` what it learnt.
    """
    if not isinstance(peft_model, PeftModel):
        raise TypeError(f"save_adapter needs a peft model (fine-tuned with method='lora'), got "
                        f"{type(peft_model).__name__}; save a fully fine-tuned model with model.save_pretrained(folder)")
    layout = model_layout(peft_model)
    dtypes = {str(p.dtype).removeprefix("torch.") for n, p in peft_model.named_parameters() if "lora_" in n}
    meta = _metadata("adapter", layout, model_id, task=task, dtype=",".join(sorted(dtypes)) or None)

    def write(folder: Path) -> None:
        peft_model.save_pretrained(str(folder), safe_serialization=True)
        (folder / ADAPTER_METADATA).write_text(json.dumps(meta, indent=2) + "\n")

    dest = Path(path)
    _atomic_folder(dest, write)
    return dest


def load_adapter(path, base_model, *, inplace: bool = False) -> tuple[PeftModel, dict[str, Any]]:
    """``(peft model, metadata)``: the adapter in folder ``path`` on ``base_model``, in eval mode.

    Checks first that the adapter was trained on a model of ``base_model``'s sizes. peft
    injects the adapter into the model it is given, so ``base_model`` is deep-copied unless
    ``inplace=True`` (which saves memory on a large model, but then ``base_model`` itself
    runs with the adapter).
    """
    folder = Path(path)
    meta_path = folder / ADAPTER_METADATA
    if not meta_path.exists():
        if folder.with_name(folder.name + ".safetensors").exists() or folder.suffix == ".safetensors":
            raise ValueError(f"{folder} is a file pair, not an adapter folder: load it with load_vector or load_scan")
        raise FileNotFoundError(f"no adapter at {folder} (no {ADAPTER_METADATA}): save one with save_adapter")
    meta = json.loads(meta_path.read_text())
    _check_kind(meta, "adapter", folder)
    if isinstance(base_model, PeftModel):
        raise ValueError("base_model already carries an adapter: pass the plain model the adapter was trained on")
    check_artifact_fits(meta, base_model)
    with peft_quietly():
        model = PeftModel.from_pretrained(base_model if inplace else copy.deepcopy(base_model), str(folder))
    return model.eval(), meta
