"""The replication scorecard: each of the paper's five claims, per profile, from ``results/``.

A claim is judged by bars fixed before any result was seen (the first issues' "done when"
tests, the same on every profile), each a :class:`Check` on the committed result of the
claim's reproduction command:

1. *Instruction following breaks while knowledge holds* (``diagnosis``): for full fine-tuning
   and LoRA, instruction following (exact match) drops by at least 0.25, knowledge (ranking)
   by at most 0.10, and the new task is learnt (valid exact match at the stop rule's bar).
2. *The vector restores instruction-less prompts* (``extraction``): the vector adds at least
   0.30 (first-token accuracy) to prompts without the instruction, a random vector of equal
   norm at most 0.05, and another task's vector less than the task's own -- on every seed.
3. *Vector similarity tracks retained performance* (``dynamics``): the R² of instruction-vector
   similarity against retained performance exceeds that of hidden-state similarity and of
   parameter distance.
4. *The original vector restores the fine-tuned model* (``dynamics``): adding it back recovers
   at least half of the lost accuracy, and a random vector less than it.
5. *IV-guided training forgets less* (``guided``): general performance at least 0.15 above plain
   LoRA, the sequence's average performance at most 0.05 below it, and general performance
   above the random-vector and KL-only controls.

Verdict: **holds** when every check passes; **does not** when the first (the claim's own
effect) fails; **partly** otherwise; **not measured** without a committed result.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ivedu.results import load_result

PROFILES = ("tiny", "smol", "colab", "paper")


@dataclass(frozen=True)
class Check:
    """One bar of a claim: what is measured, its value, the bar in words, and whether it is met."""

    what: str
    value: float
    bar: str
    met: bool


@dataclass(frozen=True)
class Verdict:
    """One claim on one profile: the checks, the headline number and the verdict.

    ``headline``: the claim's own effect (the first check's value), ``None`` when not
    measured; ``source``: the result file (``results/<profile>/<command>.json``).
    """

    claim: int
    profile: str
    checks: tuple[Check, ...]
    verdict: str
    source: str

    @property
    def headline(self) -> float | None:
        return self.checks[0].value if self.checks else None


def _diagnosis(r: dict) -> list[Check]:
    methods = [r["summary"][m] for m in ("full", "lora")]
    stop_at = r["settings"]["finetune"]["stop_at"]
    if_drop = min(m["if_drop"] for m in methods)
    kn_drop = max(m["kn_drop"] for m in methods)
    learnt = min(m["new_task"] for m in methods)
    return [Check("instruction following drop (lower of full and LoRA)", if_drop, ">= 0.25", if_drop >= 0.25),
            Check("knowledge drop (higher of full and LoRA)", kn_drop, "<= 0.10", kn_drop <= 0.10),
            Check("new task's exact match (lower of full and LoRA)", learnt, f">= {stop_at}", learnt >= stop_at)]


def _extraction(r: dict) -> list[Check]:
    rows = r["summary"]["per_seed"]
    gains = [row["with_iv"] - row["corrupted"] for row in rows]
    randoms = [row["with_random"] - row["corrupted"] for row in rows]
    others = [row["with_iv"] - row["with_other_task"] for row in rows]
    return [Check("vector's gain on instruction-less prompts (lowest seed)", min(gains), ">= 0.30",
                  min(gains) >= 0.30),
            Check("random vector's gain (highest seed)", max(randoms), "<= 0.05", max(randoms) <= 0.05),
            Check("own vector minus another task's (lowest seed)", min(others), "> 0", min(others) > 0)]


def _tracking(r: dict) -> list[Check]:
    s = r["summary"]
    return [Check("R² of vector similarity", s["r2_iv"], f"> hidden states' {s['r2_hidden']:.2f}",
                  s["r2_iv"] > s["r2_hidden"]),
            Check("R² of vector similarity minus parameter distance's", s["r2_iv"] - s["r2_params"], "> 0",
                  s["r2_iv"] > s["r2_params"])]


def _restoration(r: dict) -> list[Check]:
    s = r["summary"]
    lost = s["if_original"] - s["if_finetuned"]
    random_share = (s["if_random"] - s["if_finetuned"]) / lost if lost > 0 else float("nan")
    return [Check("share of the lost accuracy restored", s["restored_share"], ">= 0.5", s["restored_share"] >= 0.5),
            Check("random vector's share", random_share, "< the vector's", random_share < s["restored_share"])]


def _guided(r: dict) -> list[Check]:
    s = r["summary"]
    guided, plain = s["iv_guided"], s["plain_lora"]
    return [Check("general performance over plain LoRA", guided["gp"] - plain["gp"], ">= 0.15",
                  guided["gp"] - plain["gp"] >= 0.15),
            Check("sequence's average performance vs plain LoRA", guided["ap"] - plain["ap"], ">= -0.05",
                  guided["ap"] - plain["ap"] >= -0.05),
            Check("general performance over the random-vector control", guided["gp"] - s["random_vector"]["gp"],
                  "> 0", guided["gp"] > s["random_vector"]["gp"]),
            Check("general performance over the KL-only control", guided["gp"] - s["kl"]["gp"], "> 0",
                  guided["gp"] > s["kl"]["gp"])]


# claim -> (the claim in a line, the reproduction command, its checks)
CLAIMS: dict[int, tuple[str, str, Callable[[dict], list[Check]]]] = {
    1: ("Fine-tuning breaks instruction following, not knowledge", "diagnosis", _diagnosis),
    2: ("The instruction vector restores instruction-less prompts", "extraction", _extraction),
    3: ("Vector similarity tracks retained performance best", "dynamics", _tracking),
    4: ("The original vector restores the fine-tuned model", "dynamics", _restoration),
    5: ("IV-guided training forgets less than LoRA and its controls", "guided", _guided),
}


def judge(claim: int, profile: str, root: Path | None = None) -> Verdict:
    """The :class:`Verdict` of ``claim`` (1-5) on ``profile`` from its committed result."""
    if claim not in CLAIMS:
        raise ValueError(f"unknown claim {claim}; the claims are {sorted(CLAIMS)}")
    _, command, checks_of = CLAIMS[claim]
    source = f"results/{profile}/{command}.json"
    result = load_result(profile, command, root)
    if result is None:
        return Verdict(claim, profile, (), "not measured", source)
    checks = tuple(checks_of(result))
    verdict = "holds" if all(c.met for c in checks) else "does not" if not checks[0].met else "partly"
    return Verdict(claim, profile, checks, verdict, source)


def scorecard(profiles: tuple[str, ...] = PROFILES, root: Path | None = None) -> dict[int, dict[str, Verdict]]:
    """Every claim on every profile: ``card[claim][profile]``."""
    return {claim: {p: judge(claim, p, root) for p in profiles} for claim in CLAIMS}


def _cell(v: Verdict) -> str:
    return v.verdict if v.headline is None else f"{v.verdict} ({v.headline:+.2f})"


def scorecard_markdown(card: dict[int, dict[str, Verdict]], claims: tuple[int, ...] | None = None) -> str:
    """The card as a markdown table: a row per claim, a column per profile, each cell the
    verdict and the headline number (the first check's value)."""
    profiles = list(next(iter(card.values())))
    rows = ["| claim | " + " | ".join(f"`{p}`" for p in profiles) + " |", "|---" * (len(profiles) + 1) + "|"]
    for claim in claims or tuple(card):
        rows.append(f"| {claim}. {CLAIMS[claim][0]} | " + " | ".join(_cell(card[claim][p]) for p in profiles) + " |")
    return "\n".join(rows)


def checks_markdown(verdict: Verdict) -> str:
    """One verdict's checks as a markdown table: what, value, bar, met."""
    if not verdict.checks:
        return f"Claim {verdict.claim} is not measured on `{verdict.profile}` ({verdict.source} does not exist)."
    rows = ["| check | value | bar | met |", "|---|---|---|---|"]
    rows += [f"| {c.what} | {c.value:.2f} | {c.bar} | {'yes' if c.met else 'no'} |" for c in verdict.checks]
    return "\n".join(rows)
