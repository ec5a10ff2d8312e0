"""Figures for the book. Each function takes computed results and draws them; none computes.

Colours come from seaborn's colour-blind-safe palette.
"""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from ivedu.evaluation import TaskScores

PALETTE = sns.color_palette("colorblind")


def plot_loss_curve(steps: Sequence[int], losses: Sequence[float], title: str = "Training loss", ax=None):
    """Cross-entropy on the answer tokens against training step (log scale)."""
    ax = ax or plt.subplots(figsize=(6, 3.5))[1]
    ax.plot(steps, losses, color=PALETTE[0], lw=2)
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("loss on answer tokens (nats, log scale)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return ax


def plot_task_scores(rows: Sequence[TaskScores], title: str = "Per-task scores on held-out inputs", ax=None):
    """Grouped bars per task: instruction-following exact match and knowledge ranking accuracy."""
    ax = ax or plt.subplots(figsize=(9, 3.8))[1]
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [r.exact_match for r in rows], 0.4, color=PALETTE[0],
           label="instruction following (exact match)")
    ax.bar(x + 0.2, [r.ranking_accuracy for r in rows], 0.4, color=PALETTE[1],
           label="knowledge (ranking accuracy, statement form)")
    ax.set_xticks(x, [r.task for r in rows], rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score (0 to 1)")
    ax.set_title(title)
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return ax


def plot_effects_heatmap(effects, title: str = "Average indirect effect of each head", ax=None):
    """Layer x head heatmap of a scan's ``effects`` ``[layers, heads]`` (Todd et al.'s picture)."""
    ax = ax or plt.subplots(figsize=(4.2, 3.4))[1]
    values = effects.detach().cpu().numpy()
    bound = max(abs(values).max(), 1e-6)
    sns.heatmap(values, ax=ax, cmap="RdBu_r", vmin=-bound, vmax=bound, annot=values.size <= 64, fmt=".2f",
                cbar_kws={"label": "Δ P(correct first token)"})
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(title)
    return ax


def plot_sweep(sweep, layers, scales, title: str = "Instruction vector added at each layer and scale", ax=None):
    """Mean first-token accuracy ``sweep`` ``[layers, scales]`` on instruction-less prompts."""
    ax = ax or plt.subplots(figsize=(5, 3.4))[1]
    for i, layer in enumerate(layers):
        ax.plot(scales, sweep[i].tolist(), marker="o", color=PALETTE[i % len(PALETTE)], label=f"layer {layer}")
    ax.set_xlabel("scale of the added vector")
    ax.set_ylabel("first-token accuracy (valid)")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(frameon=False)
    return ax


def plot_intervention(scores, title: str = "Instruction-less test prompts, first-token accuracy", ax=None):
    """Grouped bars per task: with instruction, without, + IV, + random vector, + other task's IV."""
    conditions = [("clean", "with instruction"), ("corrupted", "no instruction"), ("with_iv", "+ its IV"),
                  ("with_random", "+ random vector"), ("with_other_task", "+ other task's IV")]
    ax = ax or plt.subplots(figsize=(10, 3.6))[1]
    width = 0.8 / len(conditions)
    for j, (field, label) in enumerate(conditions):
        xs = [i + (j - (len(conditions) - 1) / 2) * width for i in range(len(scores))]
        ax.bar(xs, [getattr(s, field) for s in scores], width, label=label, color=PALETTE[j])
    ax.set_xticks(range(len(scores)), [s.task for s in scores])
    ax.set_ylabel("first-token accuracy")
    ax.set_ylim(0, 1.05)
    ax.set_title(title)
    ax.legend(frameon=False, ncol=len(conditions), fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12))
    return ax
