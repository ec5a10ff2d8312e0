"""The replication scorecard: each of the paper's five claims, per profile, from ``results/``.

A claim is judged by bars fixed before any result was seen (the first issues' "done when"
tests), each a :class:`Check` on the committed result of the claim's reproduction command;
:data:`BARS` states them, and the book shows that text. Their numbers are the same on every
profile, except two that each profile sets and :func:`profile_bars_markdown` tabulates from
:mod:`ivedu.settings`: the stop rule's exact match (claim 1's "the new task is learnt") and the
scale rule's largest random-vector cost (claims 2 and 4).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ivedu.arguments import (check_choice, check_int, check_ints, check_mapping, check_optional_path, check_str,
                             check_strs)
from ivedu.diagnosis import KNOWLEDGE_MIN
from ivedu.results import load_result
from ivedu.settings import settings as profile_settings

PROFILES = ("tiny", "smol", "colab", "paper")

# The bars, fixed before any result was seen; these numbers are the same on every profile (the
# stop rule and the scale rule, which a profile sets, are in ivedu.settings: profile_bars_markdown).
IF_DROP_MIN = 0.25  # claim 1: instruction following drops by at least this much ...
KN_DROP_MAX = 0.10  # ... while knowledge drops by at most this much
GAIN_MIN = 0.30  # claim 2: the vector's gain on instruction-less prompts
RANDOM_GAIN_MAX = 0.05  # claim 2: a random vector's gain at most this
RESTORED_MIN = 0.5  # claim 4: share of the lost accuracy the original vector gives back
MIN_POINTS = 30  # claim 3: (task, checkpoint) points per seed before an R² is judged
GP_GAIN_MIN = 0.15  # claim 5: general performance over plain LoRA
AP_DROP_MAX = 0.05  # claim 5: the sequence's average performance at most this much lower

# The bars, in words; each check function below implements its claim's line.
BARS = f"""1. *Instruction following breaks while knowledge holds* (`diagnosis`): for full fine-tuning
   and LoRA, instruction following (exact match, mean over general tasks and seeds) drops by at
   least {IF_DROP_MIN}, with the 95% bootstrap interval of the drop (over seeds and tasks) above
   knowledge's; knowledge (ranking) drops by at most {KN_DROP_MAX:.2f}, judged only on the tasks whose
   statement probe ranks the gold answer first in at least {KNOWLEDGE_MIN} of them before
   fine-tuning (none: *not measured enough*); and the new task is learnt (exact match at least the
   profile's stop-rule bar, the exact match at which fine-tuning stops: see the table below). No new task may be an inverse or variant of a general task (the settings refuse
   one). A result recorded before these controls is judged by the first bars: the drops alone.
2. *The vector restores instruction-less prompts* (`extraction`): by exact match, the vector beats
   the stronger of two shortcuts -- always giving the task's most frequent answer, and a random vector
   of equal norm -- with the 95% bootstrap interval of its lead (over seeds and test examples) above 0;
   the setting was chosen where a random vector of its norm costs instructed accuracy at most the
   profile's `max_random_cost` (the scale rule); another task's vector scores less than the task's own
   on every seed. A result recorded before these controls is judged by the first bars: the vector adds
   at least {GAIN_MIN:.2f} (first-token accuracy) to prompts without the instruction, a random vector of
   equal norm at most {RANDOM_GAIN_MAX}, and another task's vector less than the task's own -- on every seed.
3. *Vector similarity tracks retained performance* (`dynamics`): the R² of instruction-vector
   similarity against retained performance exceeds the stronger of hidden-state similarity's and
   parameter distance's, with the 95% bootstrap interval of the lead (over seeds and (task,
   checkpoint) points) above 0; at least {MIN_POINTS} (task, checkpoint) points per seed, taken along
   training, else the claim is *not measured enough*. A result recorded before the checkpoints is
   judged by the first bars: the R² exceeds each of the two.
4. *The original vector restores the fine-tuned model* (`dynamics`): after the first stage, adding
   it back beats a random vector of its norm by exact match, with the 95% bootstrap interval of its
   lead (over tasks and seeds) above 0, and recovers at least a share of {RESTORED_MIN} of the lost
   accuracy; the layer and scale were chosen where the random vector costs the original model at most
   the profile's `max_random_cost` (the scale rule). A result recorded before these controls is judged
   by the first bars: the share at least {RESTORED_MIN}, and a random vector's share less than it.
5. *IV-guided training forgets less* (`guided`): first, general performance above its strongest
   control -- the same loss with a random vector of equal norm, or the KL terms alone, whichever
   keeps more -- with the 95% bootstrap interval of the lead (paired over seeds and general tasks)
   above 0; then at least {GP_GAIN_MIN} above plain LoRA, the sequence's average performance at most
   {AP_DROP_MAX} below it, and general performance above each control.

Verdict: **holds** when every check passes; **does not** when the first (the claim's own
effect) fails; **partly** otherwise; **not measured** without a committed result; **not measured
enough** when the result has too few points to judge (a failed prerequisite check).
"""


@dataclass(frozen=True)
class Check:
    """One bar of a claim: what is measured, its value, the bar in words, and whether it is met;
    ``interval``: the value's bootstrap interval ``(low, high)`` where one was measured;
    ``prerequisite``: a bar on the measurement itself -- failed, the claim is not measured enough."""

    what: str
    value: float
    bar: str
    met: bool
    interval: tuple[float, float] | None = None
    prerequisite: bool = False

    def value_text(self) -> str:
        """The value to two decimals, with its interval in brackets when it has one."""
        if self.interval is None:
            return f"{self.value:.2f}"
        return f"{self.value:.2f} [{self.interval[0]:.2f}, {self.interval[1]:.2f}]"


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

    @property
    def headline_interval(self) -> tuple[float, float] | None:
        """The headline's bootstrap interval, where the claim's first check has one."""
        return self.checks[0].interval if self.checks else None


def _diagnosis(r: dict) -> list[Check]:
    if "claim" in r["summary"]:
        return _diagnosis_controlled(r)
    methods = [r["summary"][m] for m in ("full", "lora")]
    stop_at = r["settings"]["finetune"]["stop_at"]
    if_drop = min(m["if_drop"] for m in methods)
    kn_drop = max(m["kn_drop"] for m in methods)
    learnt = min(m["new_task"] for m in methods)
    return [Check("instruction following drop (lower of full and LoRA)", if_drop, f">= {IF_DROP_MIN}", if_drop >= IF_DROP_MIN),
            Check("knowledge drop (higher of full and LoRA)", kn_drop, f"<= {KN_DROP_MAX:.2f}", kn_drop <= KN_DROP_MAX),
            Check("new task's exact match (lower of full and LoRA)", learnt, f">= {stop_at}", learnt >= stop_at)]


def _diagnosis_controlled(r: dict) -> list[Check]:
    """Claim 1 with intervals: instruction following's drop (the method that drops less) clear of
    knowledge's (the method that drops more), knowledge judged only on tasks the model knows."""
    claims = r["summary"]["claim"]
    stop_at = r["settings"]["finetune"]["stop_at"]
    soft = min(claims, key=lambda m: claims[m]["if_drop"])
    hard = max(claims, key=lambda m: -1 if claims[m]["kn_drop_interval"] is None else claims[m]["kn_drop"])
    if_c, kn_c = claims[soft], claims[hard]
    judged = len(kn_c["knowledge_tasks"])
    kn_high = kn_c["kn_drop_interval"][1] if kn_c["kn_drop_interval"] else float("nan")
    learnt = min(r["summary"][m]["new_task"] for m in claims)
    return [Check(f"instruction following drop ({soft}, the method that drops less; mean over general tasks and "
                  "seeds)", if_c["if_drop"], f">= {IF_DROP_MIN}, its interval above knowledge's",
                  if_c["if_drop"] >= IF_DROP_MIN and tuple(if_c["if_drop_interval"])[0] > kn_high,
                  tuple(if_c["if_drop_interval"])),
            Check(f"knowledge drop ({hard}; on the {judged} tasks whose probe ranks the gold first in >= 0.6 "
                  "before fine-tuning)", kn_c["kn_drop"], f"<= {KN_DROP_MAX:.2f}", kn_c["kn_drop"] <= KN_DROP_MAX,
                  None if kn_c["kn_drop_interval"] is None else tuple(kn_c["kn_drop_interval"])),
            Check("general tasks whose knowledge can be judged", judged, ">= 1 to judge", judged >= 1,
                  prerequisite=True),
            Check("new task's exact match (lower of full and LoRA)", learnt, f">= {stop_at}", learnt >= stop_at)]


def _extraction(r: dict) -> list[Check]:
    if "claim2" in r["summary"]:
        return _extraction_controlled(r)
    rows = r["summary"]["per_seed"]
    gains = [row["with_iv"] - row["corrupted"] for row in rows]
    randoms = [row["with_random"] - row["corrupted"] for row in rows]
    others = [row["with_iv"] - row["with_other_task"] for row in rows]
    return [Check("vector's gain on instruction-less prompts (lowest seed)", min(gains), f">= {GAIN_MIN:.2f}",
                  min(gains) >= GAIN_MIN),
            Check("random vector's gain (highest seed)", max(randoms), f"<= {RANDOM_GAIN_MAX}", max(randoms) <= RANDOM_GAIN_MAX),
            Check("own vector minus another task's (lowest seed)", min(others), "> 0", min(others) > 0)]


def _extraction_controlled(r: dict) -> list[Check]:
    """Claim 2 against its shortcuts: exact match over the constant answer and a random vector,
    with an interval; the scale rule; another task's vector."""
    c = r["summary"]["claim2"]
    low, high = c["interval"]
    level = round(100 * c.get("level", 0.95))
    carried = f"{len(c['tasks_carried'])} of {c['n_tasks']}"
    rule = c.get("random_cost")
    others = [row["with_iv_em"] - row["with_other_task_em"] for row in r["summary"]["per_seed"]]
    return [Check(f"tasks where the vector beats the constant answer and a random vector by exact match: {carried}; "
                  "its lead over the stronger of the two (mean over tasks)", c["effect"],
                  f"{level}% interval above 0", low > 0, (low, high)),
            Check("random vector's cost to instructed accuracy at the chosen setting (highest seed; the scale rule)",
                  float("nan") if rule is None else rule,
                  "not applied" if rule is None else f"<= {c['max_random_cost']:.2f}", bool(c.get("scale_rule_met"))),
            Check("own vector minus another task's, exact match (lowest seed)", min(others), "> 0", min(others) > 0)]


def _tracking(r: dict) -> list[Check]:
    s = r["summary"]
    if "claim3" in s:
        c = s["claim3"]
        low, high = c["interval"]
        return [Check(f"R² of vector similarity minus the stronger of hidden states' ({s['r2_hidden']:.2f}) and "
                      f"parameter distance's ({s['r2_params']:.2f}), mean over seeds", c["effect"],
                      f"{round(100 * c['level'])}% interval above 0", low > 0, (low, high)),
                Check("(task, checkpoint) points per seed (fewest)", c["n_points"], f">= {MIN_POINTS} to judge",
                      c["n_points"] >= MIN_POINTS, prerequisite=True)]
    return [Check("R² of vector similarity", s["r2_iv"], f"> hidden states' {s['r2_hidden']:.2f}",
                  s["r2_iv"] > s["r2_hidden"]),
            Check("R² of vector similarity minus parameter distance's", s["r2_iv"] - s["r2_params"], "> 0",
                  s["r2_iv"] > s["r2_params"])]


def _restoration(r: dict) -> list[Check]:
    s = r["summary"]
    if "claim4" in s:
        c = s["claim4"]
        low, high = c["interval"]
        skipped = f"; {c['skipped']} with no safe scale count 0" if c["skipped"] else ""
        cost, bar = c["random_cost"], r["settings"]["dynamics"]["max_random_cost"]
        return [Check(f"original vector minus a random one of its norm, exact match after the first stage (mean over "
                      f"tasks and seeds{skipped})", c["effect"], f"{round(100 * c['level'])}% interval above 0",
                      low > 0, (low, high)),
                Check("share of the lost accuracy restored", c["restored_share"], f">= {RESTORED_MIN}",
                      c["restored_share"] >= RESTORED_MIN),
                Check("random vector's cost to the original model at the chosen settings (highest; the scale rule)",
                      float("nan") if cost is None else cost, f"<= {bar:.2f}", cost is None or cost <= bar)]
    lost = s["if_original"] - s["if_finetuned"]
    random_share = (s["if_random"] - s["if_finetuned"]) / lost if lost > 0 else float("nan")
    return [Check("share of the lost accuracy restored", s["restored_share"], f">= {RESTORED_MIN}", s["restored_share"] >= RESTORED_MIN),
            Check("random vector's share", random_share, "< the vector's", random_share < s["restored_share"])]


def _headline(rows: list[dict]) -> dict:
    """Claim 5's headline from a result's per-seed rows, for results made before the command wrote it."""
    from dataclasses import asdict

    from ivedu.continual import headline

    top = headline(rows) if rows and all("general_if" in row for row in rows) else None
    return {} if top is None else asdict(top)


def _guided(r: dict) -> list[Check]:
    s = r["summary"]
    guided, plain = s["iv_guided"], s["plain_lora"]
    top = r.get("headline") or _headline(r.get("per_seed", []))
    first = [Check(f"general performance over the strongest control ({top['control']}), per seed and general task",
                   top["gp_gain"], "95% interval above 0", top["interval"][0] > 0, tuple(top["interval"]))] if top else []
    return first + [Check("general performance over plain LoRA", guided["gp"] - plain["gp"], f">= {GP_GAIN_MIN}",
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
    check_int("claim", claim)
    if claim not in CLAIMS:
        raise ValueError(f"unknown claim {claim}; the claims are {sorted(CLAIMS)}")
    check_str("profile", profile)
    check_optional_path("root", root)
    _, command, checks_of = CLAIMS[claim]
    source = f"results/{profile}/{command}.json"
    result = load_result(profile, command, root)
    if result is None:
        return Verdict(claim, profile, (), "not measured", source)
    checks = tuple(checks_of(result))
    verdict = "holds" if all(c.met for c in checks) else "does not" if not checks[0].met else "partly"
    if any(c.prerequisite and not c.met for c in checks):
        verdict = "not measured enough"
    return Verdict(claim, profile, checks, verdict, source, result.get("seeds"))


def profile_bars_markdown(profiles: tuple[str, ...] = PROFILES) -> str:
    """The bars a profile sets, read from :mod:`ivedu.settings`, as a markdown table: a row per
    profile with the stop rule's exact match (claim 1: the new task counts as learnt at it) and
    the scale rule's largest random-vector cost in chapter 2's sweep (claim 2) and in chapter 3's
    restoration (claim 4)."""
    check_strs("profiles", profiles, unique=True)

    def cost(value: float | None) -> str:
        return "not applied" if value is None else f"{value:.2f}"

    rows = ["| profile | stop rule: the new task's exact match (claim 1) | scale rule: a random vector's largest "
            "cost, extraction (claim 2) | scale rule, restoration (claim 4) |", "|---|---|---|---|"]
    for profile in profiles:
        s = profile_settings("ch1", profile)
        rows.append(f"| `{profile}` | {s.finetune.stop_at:.2f} | {cost(s.extraction.max_random_cost)} | "
                    f"{cost(s.dynamics.max_random_cost)} |")
    return "\n".join(rows)


def scorecard(profiles: tuple[str, ...] = PROFILES, root: Path | None = None) -> dict[int, dict[str, Verdict]]:
    """Every claim on every profile: ``card[claim][profile]``."""
    check_strs("profiles", profiles, unique=True)
    check_optional_path("root", root)
    return {claim: {p: judge(claim, p, root) for p in profiles} for claim in CLAIMS}


def _cell(v: Verdict) -> str:
    if v.headline is None:
        return v.verdict
    few = f"; {v.seeds} seed{'s' if v.seeds != 1 else ''}" if v.seeds is not None and v.seeds < 3 else ""
    return f"{v.verdict} ({v.checks[0].value_text()}{few})"


def scorecard_markdown(card: dict[int, dict[str, Verdict]], claims: tuple[int, ...] | None = None) -> str:
    """The card as a markdown table: a row per claim, a column per profile, each cell the
    verdict and the headline number (the first check's value, with its interval in brackets
    where it has one)."""
    check_mapping("card", card, "claim")
    for i, claim in enumerate(check_ints("claims", claims) if claims is not None else ()):
        check_choice(f"claims[{i}]", claim, tuple(card))
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
    rows += [f"| {c.what} | {c.value_text()} | {c.bar} | {'yes' if c.met else 'no'} |" for c in verdict.checks]
    return "\n".join(rows)


def verdict_markdown(claim: int, profile: str, root: Path | None = None) -> str:
    """A chapter's paragraph on one claim and profile: the verdict, its source and its checks."""
    verdict = judge(claim, profile, root)
    if not verdict.checks:
        return checks_markdown(verdict)
    seeds = "" if verdict.seeds is None else f", {verdict.seeds} seed{'s' if verdict.seeds != 1 else ''}"
    return (f"**Claim {claim} on `{profile}`: {verdict.verdict}** (from `{verdict.source}`{seeds})\n\n"
            + checks_markdown(verdict))
