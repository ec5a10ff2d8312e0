"""The tiny-instruct model: a small Llama trained from scratch on the tiny-instruct world.

``python -m ivedu.toy train --out DIR`` regenerates the checkpoint that ships in
``ivedu/checkpoints/tiny``. Training has two phases, like a real LLM's: *pre-training* on
plain statements only (the model learns the facts), then *instruction tuning* on a mix of
instructed zero-shot prompts, few-shot demonstrations and statements. Because the facts are
known before any instruction is seen, the model learns to answer instructions by using what
it knows -- and so answers held-out facts it only ever saw in statements -- instead of
memorising each instructed fact.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from ivedu.architectures import model_layout
from ivedu.checks import check_finite_loss
from ivedu.corpus import Mixture, collate, sample_sequence
from ivedu.tokenizer import world_tokenizer
from ivedu.world import World, build_world

STATEMENTS_ONLY = Mixture(instructed=0.0, fewshot=0.0, statement=1.0)


@dataclass(frozen=True)
class TinyConfig:
    """Size of the tiny model and its training recipe."""

    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 512
    max_positions: int = 128
    steps: int = 2600
    pretrain_steps: int = 800
    batch_size: int = 52
    lr: float = 2e-3
    instruction_lr_scale: float = 0.6
    residual_noise: float = 0.0
    warmup_steps: int = 100
    weight_decay: float = 0.1
    seed: int = 0
    world_seed: int = 0
    mixture: Mixture = field(default_factory=Mixture)


@dataclass
class TrainingHistory:
    """Loss per step and wall time, for loss curves."""

    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    seconds: float = 0.0


def build_tiny_model(tokenizer: PreTrainedTokenizerFast, config: TinyConfig) -> LlamaForCausalLM:
    """A randomly initialised Llama of ``config``'s size, vocabulary matching ``tokenizer``."""
    torch.manual_seed(config.seed)
    llama = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        max_position_embeddings=config.max_positions,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return LlamaForCausalLM(llama)


def statement_coverage(world: World) -> dict:
    """Which examples each task's statements cover during training.

    Facts and classifications: every example, so held-out facts are known from statements
    alone. List and format tasks compute their answer, so only their train split is used.
    """
    return {t.name: (t.train + t.valid + t.test) if t.kind in ("fact", "classification") else t.train
            for t in world.general}


def train_tiny_model(config: TinyConfig = TinyConfig(), world: World | None = None,
                     on_step: Callable[[int, float], None] | None = None,
                     log_every: int = 50) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast, TrainingHistory]:
    """Train a tiny model from scratch on ``world``'s general tasks; deterministic for a seed.

    ``on_step(step, loss)`` is called every ``log_every`` steps (e.g. to draw a live curve).
    A loss that becomes ``nan`` or infinite stops training with a ``FloatingPointError``
    naming the step (:func:`ivedu.checks.check_finite_loss`).
    """
    world = world or build_world(config.world_seed)
    tokenizer = world_tokenizer(world)
    model = build_tiny_model(tokenizer, config)
    rng = random.Random(config.seed)
    coverage = statement_coverage(world)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                  betas=(0.9, 0.98))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: _lr_factor(s, config))
    history = TrainingHistory()
    start = time.perf_counter()
    model.train()
    batches: list = []
    noise_hooks: list = []
    for step in range(config.steps):
        mixture = STATEMENTS_ONLY if step < config.pretrain_steps else config.mixture
        if step == config.pretrain_steps:  # instruction tuning starts
            batches = []
            if config.residual_noise > 0:
                noise_hooks = _add_residual_noise(model, config.residual_noise,
                                                  torch.Generator().manual_seed(config.seed))
        if not batches:
            batches = _length_grouped_batches(rng, config.batch_size, lambda: sample_sequence(
                rng, tokenizer, world.general, mixture, coverage))
        loss = model(**collate(batches.pop(), tokenizer.pad_token_id)).loss
        check_finite_loss(loss, step)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        if step % log_every == 0 or step == config.steps - 1:
            history.steps.append(step)
            history.loss.append(loss.item())
            if on_step is not None:
                on_step(step, loss.item())
    history.seconds = time.perf_counter() - start
    for hook in noise_hooks:
        hook.remove()
    model.eval()
    return model, tokenizer, history


def _add_residual_noise(model: LlamaForCausalLM, strength: float, generator: torch.Generator) -> list:
    """Hooks that add a random vector to every attention output while the model trains.

    At each token of each sequence, in every layer, the attention output ``a`` gets a random
    direction of norm ``u * |a|``, with ``u`` uniform in ``[0, strength]`` per sequence and
    layer. Off in the shipped recipe (``residual_noise=0``), kept as an option because of what
    it measurably does (seed 0, with ``instruction_lr_scale=1.0``; README, "The tiny model"):
    at 0.5 it lifts held-out exact match to at least 0.98 on every task and keeps a random
    vector of an instruction vector's norm within 0.05 of the bare prompt (chapter 2's control),
    but the model then forgets far less when fine-tuned (chapter 1: instruction following
    0.89 / 0.84 after ``first_french`` instead of about 0.63), which removes the effect the
    book is about. Returns the hook handles to remove.
    """
    def hook(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        if not module.training:
            return None
        direction = torch.randn(output.shape, generator=generator)
        direction = direction / direction.norm(dim=-1, keepdim=True)
        size = torch.rand(output.shape[0], 1, 1, generator=generator) * strength
        return output + direction * size * output.detach().norm(dim=-1, keepdim=True)

    return [out_proj.register_forward_hook(hook) for out_proj in model_layout(model).out_projs]


def _lr_factor(step: int, config: TinyConfig) -> float:
    """Warm-up, then linear decay to zero; instruction tuning runs at ``instruction_lr_scale``
    times the pre-training rate. The scale matters for held-out facts (known only from
    statements): measured on seed 0, held-out exact match, 0.4 drops capital and antonym to
    0.72 and 0.45, 0.6 (the shipped recipe) gives 0.93-0.94 on the fact tasks, 0.8 gives 0.94,
    0.9 gives 0.92 on capital, 1.0 gives 1.00 on them but 0.93 on sentiment. The recipe is
    brittle: 1.0 with 3000 steps instead of 2600 drops french and plural below 0.15."""
    warmup = min(1.0, (step + 1) / config.warmup_steps)
    decay = max(0.0, 1 - step / config.steps)
    phase = 1.0 if step < config.pretrain_steps else config.instruction_lr_scale
    return warmup * decay * phase


def _length_grouped_batches(rng: random.Random, batch_size: int, draw: Callable, pool: int = 8) -> list:
    """Draw ``pool`` batches' worth of sequences and group similar lengths together.

    Few-shot list prompts are three times longer than statements; grouping cuts the padding
    (and the training time) by about half without changing what is sampled.
    """
    sequences = sorted((draw() for _ in range(batch_size * pool)), key=lambda s: len(s.input_ids))
    grouped = [sequences[i:i + batch_size] for i in range(0, len(sequences), batch_size)]
    rng.shuffle(grouped)
    return grouped


def save_tiny_model(model, tokenizer, out: Path, config: TinyConfig, history: TrainingHistory) -> None:
    """Write the model (safetensors), tokenizer and recipe to ``out`` atomically.

    Everything goes to a sibling temporary folder first, which replaces ``out`` only once
    complete, so an interrupted run never leaves a half-written checkpoint.
    """
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    recipe = {"config": asdict(config), "train_seconds": round(history.seconds, 1),
              "final_loss": history.loss[-1] if history.loss else None}
    (tmp / "ivedu_recipe.json").write_text(json.dumps(recipe, indent=2))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ivedu.toy", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train the tiny model from scratch and save it")
    train.add_argument("--out", type=Path, required=True, help="folder to write the checkpoint to")
    train.add_argument("--steps", type=int, default=TinyConfig.steps)
    train.add_argument("--seed", type=int, default=TinyConfig.seed)
    train.add_argument("--small", action="store_true", help="a 2-layer, hidden-32 model (for quick checks)")
    train.add_argument("--threads", type=int, default=1,
                       help="torch threads (default 1: the shipped checkpoint was trained with one, and "
                            "another count rounds differently and gives other weights)")
    args = parser.parse_args(argv)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        _train_and_save(args)
    finally:
        torch.set_num_threads(previous_threads)


def _train_and_save(args: argparse.Namespace) -> None:
    """``train``: the recipe at ``args``' size, steps and seed, saved to ``args.out``."""
    size = dict(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, batch_size=8) if args.small else {}
    config = TinyConfig(steps=args.steps, seed=args.seed, pretrain_steps=min(TinyConfig.pretrain_steps, args.steps // 2),
                        **size)
    print(f"training the tiny model: {config.num_layers} layers x {config.num_heads} heads, "
          f"hidden {config.hidden_size}, {config.steps} steps", flush=True)
    model, tokenizer, history = train_tiny_model(
        config, on_step=lambda s, l: print(f"step {s:5d}  loss {l:.4f}", flush=True))
    save_tiny_model(model, tokenizer, args.out, config, history)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"saved to {args.out}: {n_params:,} parameters, trained in {history.seconds:.1f} s")


if __name__ == "__main__":
    main()
