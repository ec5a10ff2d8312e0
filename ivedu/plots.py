"""Figures for the book. Each function takes computed results and draws them; none computes.

Colours come from seaborn's colour-blind-safe palette.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from ivedu.arguments import (check_choice, check_finite, check_int, check_mapping, check_nonempty, check_same_length,
                             check_sequence, check_str, check_strs, check_tensor)
from ivedu.evaluation import TaskScores

if TYPE_CHECKING:  # chapter 3's results, for the hints only: drawing them needs nothing of dynamics
    from ivedu.dynamics import OverlayPoint, Stage, TaskAtStage

PALETTE = sns.color_palette("colorblind")


def plot_loss_curve(steps: Sequence[int], losses: Sequence[float], title: str = "Training loss", ax=None):
    """Cross-entropy on the answer tokens against training step (log scale)."""
    check_same_length("losses", check_sequence("losses", losses), "steps", check_sequence("steps", steps))
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
    check_nonempty("rows", rows, "TaskScores")
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
    check_tensor("effects", effects, 2, floating=True)
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
    check_nonempty("layers", layers, "layer")
    check_nonempty("scales", scales, "scale")
    check_same_length("layers", layers, "sweep", sweep)
    for i in range(len(layers)):
        check_same_length("scales", scales, f"sweep[{i}]", sweep[i])
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
    check_nonempty("scores", scores, "InterventionScores")
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


# Chapter 1: forgetting diagnosis ------------------------------------------------------------

ABILITY_LABELS = {
    "if_exact_match": "instruction following\n(exact match under the instruction)",
    "icl_exact_match": "in-context following\n(exact match, 4 demonstrations)",
    "kn_ranking": "knowledge\n(ranking accuracy, statement form)",
    "if_answer_prob": "P(conformant answer | instruction, input)",
    "kn_gold_prob": "P(gold answer | statement)",
}


METHOD_NAMES = {"full": "full", "lora": "LoRA"}


def _field(row, name: str) -> float:
    """A score from an :class:`ivedu.evaluation.AbilityScores` or from its dict form."""
    return row[name] if isinstance(row, dict) else getattr(row, name)


def plot_before_after(before, after, fields: Sequence[str] = ("if_exact_match", "kn_ranking"),
                      title: str = "Before and after fine-tuning, per general task", axes=None):
    """One panel per ability: each task's score before (light) and after (dark) fine-tuning.

    ``before`` and ``after`` are per-task rows (:class:`ivedu.evaluation.AbilityScores` or
    their dicts) in the same task order.
    """
    check_nonempty("before", before, "task's scores")
    check_same_length("before", before, "after", check_sequence("after", after))
    check_strs("fields", fields, unique=True)
    if axes is None:
        fig, axes = plt.subplots(1, len(fields), figsize=(5.5 * len(fields), 3.8), sharey=True)
        fig.suptitle(title)
    axes = np.atleast_1d(axes)
    x = np.arange(len(before))
    for ax, name in zip(axes, fields):
        ax.bar(x - 0.2, [_field(r, name) for r in before], 0.4, color=PALETTE[0], alpha=0.45, label="before")
        ax.bar(x + 0.2, [_field(r, name) for r in after], 0.4, color=PALETTE[0], label="after")
        ax.set_xticks(x, [_field(r, "task") for r in before], rotation=40, ha="right")
        ax.set_ylim(0, 1.22)
        ax.set_yticks(np.linspace(0, 1, 6))
        ax.set_title(ABILITY_LABELS.get(name, name), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("score on test inputs (0 to 1)")
    axes[0].legend(loc="upper left", ncol=2, fontsize=8)
    return axes


def plot_ability_gap(before: dict, afters: dict, fields: Sequence[str] = ("if_exact_match", "icl_exact_match",
                                                                           "kn_ranking"),
                     title: str = "What fine-tuning on one new task costs the general tasks", axes=None):
    """Before -> after, one panel per fine-tuning method: a line per ability, a dot per seed.

    ``before``: mean score per field (``{"if_exact_match": 0.97, ...}``); ``afters``: method
    name -> list of per-seed mean dicts. A steep line is an ability lost; a flat one, kept.
    """
    check_mapping("before", before, "field")
    check_mapping("afters", afters, "method")
    for i, name in enumerate(check_strs("fields", fields, unique=True)):
        check_choice(f"fields[{i}]", name, tuple(before))
    if axes is None:
        fig, axes = plt.subplots(1, len(afters), figsize=(4.6 * len(afters), 3.8), sharey=True)
        fig.suptitle(title)
    axes = np.atleast_1d(axes)
    for ax, (method, runs) in zip(axes, afters.items()):
        for i, name in enumerate(fields):
            after = [_field(r, name) for r in runs]
            colour = PALETTE[i]
            ax.plot([0, 1], [before[name], np.mean(after)], "-o", color=colour, lw=2.5,
                    label=ABILITY_LABELS.get(name, name).replace("\n", " "))
            ax.scatter(np.full(len(after), 1.04), after, color=colour, s=14, alpha=0.7)
        ax.set_xticks([0, 1], ["before", f"after ({len(runs)} seeds)"])
        ax.set_xlim(-0.15, 1.15)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{METHOD_NAMES.get(method, method)} fine-tuning")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("mean over general tasks (0 to 1)")
    axes[-1].legend(loc="lower left", fontsize=7)
    return axes


def plot_r_matrix(R, tasks: Sequence[str], baseline: Sequence[float] | None = None,
                  title: str = "R[stage, task]: exact match on each new task", ax=None):
    """Heatmap of the continual-learning matrix, one row per stage, annotated with the scores.

    ``R[t, i]``: score on ``tasks[i]`` after training stages ``0 .. t`` (``[T, T]``); with
    ``baseline`` (``[T]``) a first row shows the scores before any fine-tuning.
    """
    check_strs("tasks", tasks)
    try:
        R = np.asarray(R, dtype=float)
    except (TypeError, ValueError) as err:
        raise TypeError(f"R must be numbers [stages, tasks] (a list of lists or an array): {err}") from None
    if R.shape != (len(tasks), len(tasks)):
        raise ValueError(f"R must be [stages, tasks] = [{len(tasks)}, {len(tasks)}] for {len(tasks)} tasks, "
                         f"got shape {list(R.shape)}: give one row per stage and one column per task")
    check_finite("R", R.ravel().tolist())
    if baseline is not None:
        check_same_length("tasks", tasks, "baseline", check_sequence("baseline", baseline))
        check_finite("baseline", baseline)
    rows = [f"after {t + 1}: {name}" for t, name in enumerate(tasks)]
    if baseline is not None:
        R = np.vstack([np.asarray(baseline, dtype=float)[None], R])
        rows = ["before fine-tuning", *rows]
    ax = ax or plt.subplots(figsize=(1.6 * len(tasks) + 2.5, 0.6 * len(rows) + 1.2))[1]
    image = ax.imshow(R, cmap="cividis", vmin=0, vmax=1, aspect="auto")
    for (r, c), v in np.ndenumerate(R):
        ax.text(c, r, f"{v:.2f}", ha="center", va="center", color="black" if v > 0.5 else "white", fontsize=9)
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("task scored")
    ax.set_title(title)
    plt.colorbar(image, ax=ax, label="exact match")
    return ax


def plot_stages(general_if: Sequence[float], general_kn: Sequence[float], labels: Sequence[str],
                title: str = "General tasks along the sequence", ax=None):
    """Mean instruction following and knowledge of the general tasks after each stage."""
    check_strs("labels", labels)
    check_same_length("labels", labels, "general_if", check_sequence("general_if", general_if))
    check_same_length("labels", labels, "general_kn", check_sequence("general_kn", general_kn))
    ax = ax or plt.subplots(figsize=(6, 3.5))[1]
    x = np.arange(len(labels))
    ax.plot(x, general_if, "-o", color=PALETTE[0], lw=2, label=ABILITY_LABELS["if_exact_match"].replace("\n", " "))
    ax.plot(x, general_kn, "-s", color=PALETTE[2], lw=2, label=ABILITY_LABELS["kn_ranking"].replace("\n", " "))
    ax.set_xticks(x, labels, rotation=20, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("mean over general tasks (0 to 1)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    return ax


def plot_step_costs(rows: dict, title: str = "Time of each step per profile", ax=None):
    """Horizontal bars of each step's time (log scale), one colour per profile.

    ``rows``: ``{profile label: [ivedu.costs.StepCost, ...]}``; hatched bars are estimates by
    arithmetic, plain bars measurements (the ``basis`` of each row).
    """
    check_mapping("rows", rows, "profile")
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(8, 0.35 * sum(len(v) for v in rows.values()) + 1.5))[1]
    colours = plt.get_cmap("tab10").colors
    labels, y = [], 0
    for i, (profile, costs) in enumerate(rows.items()):
        for c in costs:
            estimate = c.basis.startswith("estimate")
            ax.barh(y, max(c.seconds, 1e-3), color=colours[i % len(colours)], hatch="//" if estimate else None,
                    edgecolor="black", linewidth=0.5, label=profile if c is costs[0] else None)
            labels.append(c.step)
            y += 1
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("seconds (log scale; hatched: estimate by arithmetic, plain: measured)")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    return ax


def plot_similarity_fits(rows: Sequence[TaskAtStage], fits: Sequence[tuple[str, str]], y: str = "if_exact_match",
                         title: str = "Instruction following against similarity to the original model"):
    """One scatter per similarity measure, with its least-squares line and R² in the panel title.

    ``rows``: one :class:`ivedu.dynamics.TaskAtStage` per (task, stage), with the ``y`` field
    and each ``fits`` field; ``fits``: ``(field, axis label)`` pairs, e.g.
    ``("iv_cosine", "IV cosine to the original")``.
    """
    check_nonempty("rows", rows, "TaskAtStage")
    check_nonempty("fits", fits, "(field, axis label) pair")
    check_str("y", y)
    fig, axes = plt.subplots(1, len(fits), figsize=(4 * len(fits), 3.6), sharey=True)
    ys = np.array([getattr(r, y) for r in rows], float)
    for ax, (field, label) in zip(np.atleast_1d(axes), fits):
        xs = np.array([getattr(r, field) for r in rows], float)
        ax.scatter(xs, ys, s=22, color=PALETTE[0], alpha=0.8)
        r2 = float(np.corrcoef(xs, ys)[0, 1] ** 2) if np.ptp(xs) > 0 and np.ptp(ys) > 0 else 0.0
        if np.ptp(xs) > 0:
            slope, intercept = np.polyfit(xs, ys, 1)
            grid = np.linspace(xs.min(), xs.max(), 50)
            ax.plot(grid, intercept + slope * grid, color=PALETTE[3], lw=1.5)
        ax.set_xlabel(label)
        ax.set_title(f"R² = {r2:.2f}")
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("instruction following (exact match)")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_restoration(rows: dict[str, TaskAtStage], original: dict[str, TaskAtStage],
                     title: str = "Restoring instruction following with the original vectors", ax=None):
    """Grouped bars per task: original model, fine-tuned, + original IV, + random vector, − new task's IV.

    ``rows``: task -> :class:`ivedu.dynamics.TaskAtStage` of a stage analysed with restoration
    (:func:`ivedu.dynamics.analyse_stage`); ``original``: task -> the original model's row.
    """
    check_mapping("rows", rows, "task")
    check_mapping("original", original, "task")
    missing = [task for task in rows if task not in original]
    if missing:
        raise ValueError(f"original has no row for {missing}: give the original model's row of every task of rows")
    ax = ax or plt.subplots(figsize=(10, 3.8))[1]
    bars = (("original model", lambda t: original[t].if_exact_match),
            ("fine-tuned", lambda t: rows[t].if_exact_match),
            ("+ original IV", lambda t: rows[t].restored.exact_match),
            ("+ random vector (same norm)", lambda t: rows[t].restored.random_exact_match),
            ("− new task's IV", lambda t: rows[t].subtracted.exact_match))
    tasks = list(rows)
    x = np.arange(len(tasks))
    width = 0.8 / len(bars)
    for i, (label, value) in enumerate(bars):
        ax.bar(x + (i - (len(bars) - 1) / 2) * width, [value(t) for t in tasks], width, label=label,
               color=PALETTE[i])
    ax.set_xticks(x, tasks, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("exact match under the instruction")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.3))
    ax.grid(axis="y", alpha=0.3)
    return ax


def plot_overlay(overlay: Sequence[OverlayPoint], layer: int,
                 title: str = "Where the answer-position state points during fine-tuning", ax=None):
    """Mean projection of general-task prompts' hidden state on their own task's original vector
    and on the new task's vector, against training step, in residual layer ``layer``
    (``overlay``: from :func:`ivedu.dynamics.overlay`)."""
    check_nonempty("overlay", overlay, "OverlayPoint")
    check_int("layer", layer, 0, len(overlay[0].old) - 1)
    ax = ax or plt.subplots(figsize=(6, 3.6))[1]
    steps = [o.step for o in overlay]
    ax.plot(steps, [o.old[layer] for o in overlay], marker="o", color=PALETTE[0],
            label="on each prompt's own task's original IV")
    ax.plot(steps, [o.new[layer] for o in overlay], marker="s", color=PALETTE[3], label="on the new task's IV")
    ax.set_xlabel("fine-tuning step")
    ax.set_ylabel(f"mean projection (after layer {layer})")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return ax


def plot_vector_drift(stages: Sequence[Stage], fields: Sequence[tuple[str, str]], labels: Sequence[str],
                      title: str = "Similarity to the original model, stage by stage", ax=None):
    """Mean over general tasks of each per-task field (:meth:`ivedu.dynamics.Stage.mean`), one
    line per field, against stage."""
    check_nonempty("stages", stages, "Stage")
    check_nonempty("fields", fields, "(field, label) pair")
    check_same_length("stages", stages, "labels", check_sequence("labels", labels))
    ax = ax or plt.subplots(figsize=(6.5, 3.6))[1]
    x = np.arange(len(stages))
    for i, (field, label) in enumerate(fields):
        means = [stage.mean(field) for stage in stages]
        ax.plot(x, means, marker="o", color=PALETTE[i], label=label)
    ax.set_xticks(x, labels)
    ax.set_ylim(-0.05, 1.05)
    ax.set_ylabel("mean over the general tasks")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return ax


def plot_method_comparison(summary: dict, names: Sequence[str], keys: Sequence[tuple[str, str]] = (
        ("gp", "GP: general tasks, zero-shot"), ("ip", "IP: general tasks, 4-shot"),
        ("ap", "AP: new tasks, right after each")),
        title: str = "Continual-learning methods on the 3-task sequence", ax=None):
    """Grouped bars: one group per method, one bar per measure, with the seeds' standard deviation.

    ``summary[name]``: a :class:`ivedu.continual.MethodSummary` (means over seeds, with their
    standard deviation as error bars) or one run's :class:`ivedu.continual.MethodScores`
    (no error bars); ``keys``: ``(field, label)`` pairs of their fields.
    """
    check_mapping("summary", summary, "method")
    for i, name in enumerate(check_strs("names", names, unique=True)):
        check_choice(f"names[{i}]", name, tuple(summary))
    check_nonempty("keys", keys, "(field, label) pair")
    ax = ax or plt.subplots(figsize=(8, 3.8))[1]
    x = np.arange(len(names))
    width = 0.8 / len(keys)
    means_of = {n: getattr(summary[n], "mean", summary[n]) for n in names}
    std_of = {n: getattr(summary[n], "std", None) for n in names}
    for i, (key, label) in enumerate(keys):
        means = [getattr(means_of[n], key) for n in names]
        errs = [getattr(std_of[n], key) if std_of[n] is not None else 0.0 for n in names]
        ax.bar(x + (i - (len(keys) - 1) / 2) * width, means, width, yerr=errs if any(errs) else None, capsize=3,
               color=PALETTE[i], label=label)
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.set_ylim(0, 1.3)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel("exact match (0 to 1)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper center", ncol=len(keys) if len(keys) <= 2 else 2)
    ax.grid(axis="y", alpha=0.3)
    return ax


def plot_loss_terms(history: Sequence[Sequence[dict]], stage_names: Sequence[str],
                    title: str = "Terms of the guided loss during training", ax=None):
    """Each weighted term of the guided loss against training step, stages one after another.

    ``history[s]``: stage ``s``'s per-step dicts (:attr:`ivedu.guided.GuidedObjective.history`);
    the vector's progressive weight is drawn on a second axis. Dotted lines mark stage ends.
    """
    check_nonempty("history", history, "stage")
    check_same_length("history", history, "stage_names", check_strs("stage_names", stage_names))
    if not any(len(stage) for stage in history):
        raise ValueError("history holds no step: give the per-step dicts of at least one stage")
    ax = ax or plt.subplots(figsize=(8, 3.8))[1]
    rows = [row for stage in history for row in stage]
    steps = np.arange(len(rows))
    terms = [k for k in rows[0] if k != "vector_weight"]
    for i, term in enumerate(terms):
        # a term switched off by its gate is 0: leave a gap rather than plot it at the axis floor
        ax.plot(steps, [r[term] if r[term] > 0 else np.nan for r in rows], color=PALETTE[i], lw=1.2, label=term)
    ax.set_yscale("log")
    ax.set_xlabel("training step (stages one after another)")
    ax.set_ylabel("weighted term (log scale; gaps: gated off)")
    end = 0
    for i, (stage, name) in enumerate(zip(history, stage_names)):
        ax.text(end + len(stage) / 2, 1.01 + 0.06 * (i % 2), name, fontsize=8, ha="center", va="bottom",
                transform=ax.get_xaxis_transform())  # alternate heights: short stages' names would overlap
        end += len(stage)
        ax.axvline(end, color="grey", ls=":", lw=1)
    twin = ax.twinx()
    twin.plot(steps, [r["vector_weight"] for r in rows], color="black", ls="--", lw=1, label="vector weight λ")
    twin.set_ylim(0, 1.05)
    twin.set_ylabel("student's vector weight λ")
    lines = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    labels = ax.get_legend_handles_labels()[1] + twin.get_legend_handles_labels()[1]
    ax.legend(lines, labels, fontsize=8, loc="lower left")
    ax.set_title(title, pad=24)
    return ax


def _mean(values) -> float:
    values = list(values)
    return float(np.mean(values)) if values else float("nan")


def _mean_if(entry: dict) -> float:
    """The general tasks' mean instruction-following exact match in a stage or checkpoint entry."""
    return _mean(t["if_exact_match"] for t in entry["tasks"].values())


def training_curve(seed_run: dict) -> tuple[list[int], list[float], list[int]]:
    """One seed of a committed ``dynamics`` result (``per_seed[i]``) along training: the
    cumulative training step of the original model (0), of every checkpoint and of every stage
    end, the general tasks' mean instruction-following exact match there, and the steps where
    stages end."""
    check_mapping("seed_run", seed_run, "field")
    stages = seed_run["stages"]
    start_of, total = {}, 0
    for stage in stages[1:]:
        start_of[stage["stage"]] = total
        total += stage["steps"]
    points = [(0, _mean_if(stages[0]))]
    points += [(start_of[c["stage"]] + c["step"], _mean_if(c)) for c in seed_run.get("checkpoints", [])]
    ends = [start_of[s["stage"]] + s["steps"] for s in stages[1:]]
    points += [(end, _mean_if(s)) for end, s in zip(ends, stages[1:])]
    points.sort()
    return [p[0] for p in points], [p[1] for p in points], ends


def plot_dynamics_result(result: dict, title: str = "The dynamics command's run"):
    """A committed ``dynamics`` result (``results/<profile>/dynamics.json``) in two panels.

    Left, along training: each seed's general tasks' mean instruction following (exact match) at
    the original model, every checkpoint and every stage end, and at the stage ends where the
    command restored, the same with the original vectors added and with random vectors of their
    norm (claim 4). Right: each seed's R² of instruction following on the three similarity
    measures over its (task, checkpoint) points (claim 3), a dot per seed and a bar at the mean.
    """
    check_mapping("result", result, "field")
    runs = check_nonempty("result['per_seed']", result.get("per_seed"), "seed")
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.9), gridspec_kw={"width_ratios": [1.8, 1]})
    curves = [training_curve(run) for run in runs]
    for i, (run, (steps, scores, ends)) in enumerate(zip(runs, curves)):
        left.plot(steps, scores, marker="o", ms=3, lw=1.2, color=PALETTE[0], alpha=0.8,
                  label="fine-tuned" if i == 0 else None)
        for end, stage in zip(ends, run["stages"][1:]):
            rows = list(stage["tasks"].values())
            if "restored_exact_match" in rows[0]:
                left.scatter([end], [_mean(r["restored_exact_match"] for r in rows)], marker="^", s=46,
                             color=PALETTE[2], zorder=3, label="+ original vectors" if i == 0 and end == ends[0] else None)
                left.scatter([end], [_mean(r["restored_random_exact_match"] for r in rows)], marker="x", s=40,
                             color=PALETTE[3], zorder=3, label="+ random vectors" if i == 0 and end == ends[0] else None)
    for end, stage in zip(curves[0][2], runs[0]["stages"][1:]):
        left.axvline(end, color="grey", ls=":", lw=1)
        left.text(end, 1.02, f"end of {stage['task']}", rotation=0, ha="right", va="bottom", fontsize=7,
                  transform=left.get_xaxis_transform())
    left.set_xlabel("training steps (cumulative over the sequence; seed 0's stage ends dotted)")
    left.set_ylabel("general tasks: instruction following\n(mean exact match)")
    left.set_ylim(-0.02, 1.0)
    left.grid(alpha=0.3)
    left.legend(fontsize=8, loc="lower left")
    measures = (("r2_iv", "IV cosine"), ("r2_hidden", "hidden-state\ncosine"), ("r2_params", "weight\ndistance"))
    for j, (key, label) in enumerate(measures):
        values = [run["r2"][key] for run in runs]
        right.bar(j, np.mean(values), color=PALETTE[j], alpha=0.5, width=0.6)
        right.scatter([j] * len(values), values, color=PALETTE[j], edgecolor="black", zorder=3, s=28)
    right.set_xticks(range(len(measures)), [label for _, label in measures])
    right.set_ylim(0, 1)
    right.set_ylabel("R² with instruction following")
    right.set_title(f"per seed ({runs[0]['r2'].get('n_points', '?')} points in seed {runs[0]['seed']})", fontsize=9)
    right.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_guided_result(result: dict, keys: Sequence[tuple[str, str]] = (
        ("gp", "GP: general tasks, zero-shot"), ("ip", "IP: general tasks, with demonstrations"),
        ("ap", "AP: new tasks, right after each")),
        title: str = "The guided command's run", ax=None):
    """A committed ``guided`` result (``results/<profile>/guided.json``): grouped bars, a group per
    method, a bar per measure at its mean over seeds with the seeds' standard deviation, and each
    seed's value as a dot, so a reader sees how far the seeds spread before comparing methods."""
    check_mapping("result", result, "field")
    summary = check_mapping("result['summary']", result.get("summary"), "method")
    check_nonempty("keys", keys, "(field, label) pair")
    names = list(summary)
    ax = ax or plt.subplots(figsize=(8.5, 3.8))[1]
    x = np.arange(len(names))
    width = 0.8 / len(keys)
    for i, (key, label) in enumerate(keys):
        offset = x + (i - (len(keys) - 1) / 2) * width
        ax.bar(offset, [summary[n][key] for n in names], width, yerr=[summary[n].get(f"{key}_std", 0.0) for n in names],
               capsize=3, color=PALETTE[i], alpha=0.75, label=label)
        for j, name in enumerate(names):
            seeds = [run[key] if key in run else run["metrics"][key.upper()] for run in result.get("per_seed", [])
                     if run.get("method") == name and (key in run or key.upper() in run.get("metrics", {}))]
            ax.scatter([offset[j]] * len(seeds), seeds, s=9, color="black", zorder=3)
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.set_ylim(0, 1.3)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel("exact match (0 to 1)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper center", ncol=len(keys))
    ax.grid(axis="y", alpha=0.3)
    return ax
