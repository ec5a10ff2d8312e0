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
