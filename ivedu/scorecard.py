"""The replication scorecard: each of the paper's five claims, per profile, from ``results/``.

A claim is judged by bars fixed before any result was seen (the first issues' "done when"
tests, the same on every profile), each a :class:`Check` on the committed result of the
claim's reproduction command; :data:`BARS` states them, and the book shows that text.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ivedu.results import load_result

PROFILES = ("tiny", "smol", "colab", "paper")

# The bars, fixed before any result was seen; the same on every profile.
IF_DROP_MIN = 0.25  # claim 1: instruction following drops by at least this much ...
KN_DROP_MAX = 0.10  # ... while knowledge drops by at most this much
GAIN_MIN = 0.30  # claim 2: the vector's gain on instruction-less prompts
RANDOM_GAIN_MAX = 0.05  # claim 2: a random vector's gain at most this
RESTORED_MIN = 0.5  # claim 4: share of the lost accuracy the original vector gives back
GP_GAIN_MIN = 0.15  # claim 5: general performance over plain LoRA
AP_DROP_MAX = 0.05  # claim 5: the sequence's average performance at most this much lower

# The bars, in words; each check function below implements its claim's line.
BARS = f"""1. *Instruction following breaks while knowledge holds* (`diagnosis`): for full fine-tuning
   and LoRA, instruction following (exact match) drops by at least {IF_DROP_MIN}, knowledge (ranking)
   by at most {KN_DROP_MAX:.2f}, and the new task is learnt (valid exact match at the stop rule's bar).
2. *The vector restores instruction-less prompts* (`extraction`): the vector adds at least
   {GAIN_MIN:.2f} (first-token accuracy) to prompts without the instruction, a random vector of equal
   norm at most {RANDOM_GAIN_MAX}, and another task's vector less than the task's own -- on every seed.
3. *Vector similarity tracks retained performance* (`dynamics`): the R² of instruction-vector
   similarity against retained performance exceeds that of hidden-state similarity and of
   parameter distance.
4. *The original vector restores the fine-tuned model* (`dynamics`): adding it back recovers
   at least a share of {RESTORED_MIN} of the lost accuracy, and a random vector less than it.
5. *IV-guided training forgets less* (`guided`): general performance at least {GP_GAIN_MIN} above plain
   LoRA, the sequence's average performance at most {AP_DROP_MAX} below it, and general performance
   above the random-vector and KL-only controls.

Verdict: **holds** when every check passes; **does not** when the first (the claim's own
effect) fails; **partly** otherwise; **not measured** without a committed result.
"""


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
    measured; ``source``: the result file (``results/<profile>/<command>.json``); ``seeds``:
    how many seeds it averages (fewer than the usual three is a first measurement, and says so).
    """

    claim: int
    profile: str
    checks: tuple[Check, ...]
    verdict: str
    source: str
    seeds: int | None = None

    @property
    def headline(self) -> float | None:
        return self.checks[0].value if self.checks else None


def _diagnosis(r: dict) -> list[Check]:
    methods = [r["summary"][m] for m in ("full", "lora")]
    stop_at = r["settings"]["finetune"]["stop_at"]
    if_drop = min(m["if_drop"] for m in methods)
    kn_drop = max(m["kn_drop"] for m in methods)
    learnt = min(m["new_task"] for m in methods)
    return [Check("instruction following drop (lower of full and LoRA)", if_drop, f">= {IF_DROP_MIN}", if_drop >= IF_DROP_MIN),
            Check("knowledge drop (higher of full and LoRA)", kn_drop, f"<= {KN_DROP_MAX:.2f}", kn_drop <= KN_DROP_MAX),
            Check("new task's exact match (lower of full and LoRA)", learnt, f">= {stop_at}", learnt >= stop_at)]


def _extraction(r: dict) -> list[Check]:
    rows = r["summary"]["per_seed"]
    gains = [row["with_iv"] - row["corrupted"] for row in rows]
    randoms = [row["with_random"] - row["corrupted"] for row in rows]
    others = [row["with_iv"] - row["with_other_task"] for row in rows]
    return [Check("vector's gain on instruction-less prompts (lowest seed)", min(gains), f">= {GAIN_MIN:.2f}",
                  min(gains) >= GAIN_MIN),
            Check("random vector's gain (highest seed)", max(randoms), f"<= {RANDOM_GAIN_MAX}", max(randoms) <= RANDOM_GAIN_MAX),
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
    return [Check("share of the lost accuracy restored", s["restored_share"], f">= {RESTORED_MIN}", s["restored_share"] >= RESTORED_MIN),
            Check("random vector's share", random_share, "< the vector's", random_share < s["restored_share"])]


def _guided(r: dict) -> list[Check]:
    s = r["summary"]
    guided, plain = s["iv_guided"], s["plain_lora"]
    return [Check("general performance over plain LoRA", guided["gp"] - plain["gp"], f">= {GP_GAIN_MIN}",
                  guided["gp"] - plain["gp"] >= GP_GAIN_MIN),
            Check("sequence's average performance vs plain LoRA", guided["ap"] - plain["ap"], f">= -{AP_DROP_MAX}",
                  guided["ap"] - plain["ap"] >= -AP_DROP_MAX),
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
    return Verdict(claim, profile, checks, verdict, source, result.get("seeds"))


def scorecard(profiles: tuple[str, ...] = PROFILES, root: Path | None = None) -> dict[int, dict[str, Verdict]]:
    """Every claim on every profile: ``card[claim][profile]``."""
    return {claim: {p: judge(claim, p, root) for p in profiles} for claim in CLAIMS}


def _cell(v: Verdict) -> str:
    if v.headline is None:
        return v.verdict
    few = f"; {v.seeds} seed{'s' if v.seeds != 1 else ''}" if v.seeds is not None and v.seeds < 3 else ""
    return f"{v.verdict} ({v.headline:.2f}{few})"


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


def verdict_markdown(claim: int, profile: str, root: Path | None = None) -> str:
    """A chapter's paragraph on one claim and profile: the verdict, its source and its checks."""
    verdict = judge(claim, profile, root)
    if not verdict.checks:
        return checks_markdown(verdict)
    seeds = "" if verdict.seeds is None else f", {verdict.seeds} seed{'s' if verdict.seeds != 1 else ''}"
    return (f"**Claim {claim} on `{profile}`: {verdict.verdict}** (from `{verdict.source}`{seeds})\n\n"
            + checks_markdown(verdict))
