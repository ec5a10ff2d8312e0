"""The scorecard (``ivedu.scorecard``): verdicts from results by the stated bars."""

import re

import pytest

from ivedu.results import result_path, save_result
from ivedu.scorecard import CLAIMS, checks_markdown, judge, scorecard, scorecard_markdown, verdict_markdown


def extraction(gains, randoms, others):
    rows = [{"corrupted": 0.2, "with_iv": 0.2 + g, "with_random": 0.2 + r, "with_other_task": 0.2 + g - o}
            for g, r, o in zip(gains, randoms, others)]
    return {"summary": {"per_seed": rows}}


@pytest.mark.parametrize("gains, randoms, others, verdict", [
    ((0.4, 0.5), (0.0, 0.01), (0.3, 0.2), "holds"),
    ((0.4, 0.29), (0.0, 0.01), (0.3, 0.2), "does not"),  # one seed below the bar is enough to fail
    ((0.4, 0.5), (0.0, 0.06), (0.3, 0.2), "partly"),  # the effect holds, a control does not
])
def test_extraction_verdicts_follow_the_bars_on_every_seed(tmp_path, gains, randoms, others, verdict):
    save_result(extraction(gains, randoms, others), result_path("tiny", "extraction", tmp_path))
    v = judge(2, "tiny", tmp_path)
    assert v.verdict == verdict and v.headline == pytest.approx(min(gains))
    assert v.source == "results/tiny/extraction.json"


def controlled(interval, random_cost=0.04, others=(0.3, 0.2), effect=0.2):
    """An extraction result with the shortcut controls (``summary["claim2"]``)."""
    rows = [{"corrupted": 0.2, "with_iv": 0.9, "with_random": 0.2, "with_other_task": 0.1,
             "with_iv_em": 0.5, "with_other_task_em": 0.5 - o} for o in others]
    claim2 = {"tasks_carried": ["a", "b"], "n_tasks": 3, "effect": effect, "interval": list(interval), "level": 0.95,
              "random_cost": random_cost, "max_random_cost": 0.1,
              "scale_rule_met": None if random_cost is None else random_cost <= 0.1}
    return {"summary": {"per_seed": rows, "claim2": claim2}, "seeds": 2}


@pytest.mark.parametrize("interval, random_cost, others, verdict, met", [
    ((0.05, 0.3), 0.04, (0.3, 0.2), "holds", [True, True, True]),
    ((-0.01, 0.3), 0.04, (0.3, 0.2), "does not", [False, True, True]),  # the interval reaches 0
    ((0.05, 0.3), 0.12, (0.3, 0.2), "partly", [True, False, True]),  # the scale rule is broken
    ((0.05, 0.3), None, (0.3, 0.2), "partly", [True, False, True]),  # the scale rule was not applied
    ((0.05, 0.3), 0.04, (0.3, -0.1), "partly", [True, True, False]),
])
def test_a_result_with_shortcut_controls_is_judged_by_exact_match_over_the_stronger_shortcut(
        tmp_path, interval, random_cost, others, verdict, met):
    """First-token gains do not count once the controls are recorded: the old bars would pass
    every one of these (gain 0.7, random gain 0), the new ones need the interval above 0."""
    save_result(controlled(interval, random_cost, others), result_path("tiny", "extraction", tmp_path))
    v = judge(2, "tiny", tmp_path)
    assert [c.met for c in v.checks] == met and v.verdict == verdict
    assert v.headline == pytest.approx(0.2) and v.headline_interval == pytest.approx(interval)
    assert v.checks[0].what.startswith("tasks where the vector beats the constant answer and a random vector "
                                       "by exact match: 2 of 3")
    assert f"0.20 [{interval[0]:.2f}, {interval[1]:.2f}] | 95% interval above 0 |" in checks_markdown(v)
    assert f"{verdict} (0.20 [{interval[0]:.2f}, {interval[1]:.2f}]; 2 seeds)" in \
        scorecard_markdown(scorecard(("tiny",), tmp_path), claims=(2,))


def test_restoration_and_guided_verdicts(tmp_path):
    save_result({"summary": {"if_original": 0.9, "if_finetuned": 0.5, "if_random": 0.52, "restored_share": 0.6,
                             "r2_iv": 0.3, "r2_hidden": 0.8, "r2_params": 0.4}},
                result_path("smol", "dynamics", tmp_path))
    assert judge(4, "smol", tmp_path).verdict == "holds"
    assert judge(3, "smol", tmp_path).verdict == "does not"
    methods = {"iv_guided": {"gp": 0.6, "ap": 0.9}, "plain_lora": {"gp": 0.3, "ap": 0.97},
               "random_vector": {"gp": 0.65, "ap": 0.9}, "kl": {"gp": 0.5, "ap": 0.8}}
    save_result({"summary": methods, "seeds": 1}, result_path("smol", "guided", tmp_path))
    guided = judge(5, "smol", tmp_path)
    assert guided.verdict == "partly"
    assert [c.met for c in guided.checks] == [True, False, False, True]
    assert guided.seeds == 1 and "(from `results/smol/guided.json`, 1 seed)" in verdict_markdown(5, "smol", tmp_path)
    assert "partly (0.30; 1 seed)" in scorecard_markdown(scorecard(("smol",), tmp_path), claims=(5,)), \
        "a first measurement on fewer than three seeds says so in the card"


def test_a_missing_result_is_not_measured_and_the_table_says_so(tmp_path):
    card = scorecard(("tiny", "smol"), tmp_path)
    assert set(card) == set(CLAIMS) and all(v.verdict == "not measured" for row in card.values() for v in row.values())
    table = scorecard_markdown(card)
    assert table.splitlines()[0] == "| claim | `tiny` | `smol` |" and table.count("not measured") == 10
    assert "not measured on `tiny`" in checks_markdown(card[1]["tiny"])
    with pytest.raises(ValueError, match="unknown claim 6"):
        judge(6, "tiny", tmp_path)


def test_diagnosis_needs_both_methods_and_the_new_task_learnt(tmp_path):
    def method(if_drop, kn_drop, new_task):
        return {"if_drop": if_drop, "kn_drop": kn_drop, "new_task": new_task}

    result = {"settings": {"finetune": {"stop_at": 0.9}},
              "summary": {"full": method(0.4, 0.01, 1.0), "lora": method(0.3, 0.02, 0.85)}}
    save_result(result, result_path("tiny", "diagnosis", tmp_path))
    v = judge(1, "tiny", tmp_path)
    assert v.verdict == "partly" and v.headline == pytest.approx(0.3)
    assert "| new task's exact match (lower of full and LoRA) | 0.85 | >= 0.9 | no |" in checks_markdown(v)


@pytest.mark.parametrize("chapter, claims", [("00", None), ("01", (1,)), ("02", (2,)), ("03", (3, 4)), ("04", (5,))])
def test_each_chapter_opens_with_its_row_of_the_scorecard(chapter, claims):
    import json
    from pathlib import Path

    book = Path(__file__).resolve().parents[1] / "book"
    path = next(book.glob(f"{chapter}_*.ipynb"))
    code = ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    call = "scorecard_markdown(scorecard())" if claims is None else f"scorecard_markdown(scorecard(), claims={claims!r})"
    assert any(call in c for c in code[:4]), f"{path.name} should show {call} right after its set-up cell"


def diagnosis_controlled(if_drop, if_interval, kn_drop, kn_interval, knowledge_tasks=("a",), learnt=0.9):
    """A diagnosis result with claim 1's intervals (``summary["claim"]``)."""
    claim = {"if_drop": if_drop, "if_drop_interval": list(if_interval), "kn_drop": kn_drop,
             "kn_drop_interval": None if kn_interval is None else list(kn_interval),
             "knowledge_tasks": list(knowledge_tasks)}
    return {"summary": {"full": {"new_task": learnt}, "lora": {"new_task": learnt},
                        "claim": {"full": claim, "lora": claim}},
            "settings": {"finetune": {"stop_at": 0.8}}, "seeds": 3}


@pytest.mark.parametrize("if_drop, if_interval, kn_drop, kn_interval, tasks, verdict", [
    (0.4, (0.3, 0.5), 0.02, (-0.05, 0.08), ("a",), "holds"),
    (0.4, (0.05, 0.7), 0.02, (-0.05, 0.08), ("a",), "does not"),  # the drop's interval reaches knowledge's
    (0.2, (0.15, 0.25), 0.0, (0.0, 0.0), ("a",), "does not"),  # below the bar
    (0.4, (0.3, 0.5), 0.2, (0.1, 0.25), ("a",), "partly"),  # knowledge drops too
    (0.4, (0.3, 0.5), float("nan"), None, (), "not measured enough"),  # no task whose knowledge can be judged
])
def test_claim_one_needs_the_drop_clear_of_knowledge_on_tasks_the_model_knows(
        tmp_path, if_drop, if_interval, kn_drop, kn_interval, tasks, verdict):
    save_result(diagnosis_controlled(if_drop, if_interval, kn_drop, kn_interval, tasks),
                result_path("smol", "diagnosis", tmp_path))
    v = judge(1, "smol", tmp_path)
    assert v.verdict == verdict and v.headline_interval == pytest.approx(if_interval)


def test_claim_five_leads_with_iv_guided_minus_its_strongest_control(tmp_path):
    methods = {m: {"gp": gp, "ap": 0.9} for m, gp in (("iv_guided", 0.5), ("plain_lora", 0.1),
                                                      ("random_vector", 0.45), ("kl", 0.3))}
    for interval, verdict in (((0.01, 0.09), "holds"), ((-0.02, 0.12), "does not")):
        save_result({"summary": methods, "headline": {"control": "random_vector", "gp_gain": 0.05,
                                                      "interval": list(interval), "n_pairs": 30}, "seeds": 5},
                    result_path("smol", "guided", tmp_path))
        v = judge(5, "smol", tmp_path)
        assert v.verdict == verdict and v.headline == pytest.approx(0.05)
        assert "strongest control (random_vector)" in v.checks[0].what


def test_the_bars_a_profile_sets_are_read_from_its_settings():
    """The stop rule differs between profiles (0.9 on tiny, 0.8 on smol): the page states each profile's."""
    from ivedu.scorecard import PROFILES, profile_bars_markdown
    from ivedu.settings import settings

    table = profile_bars_markdown()
    for profile in PROFILES:
        row = next(line for line in table.splitlines() if line.startswith(f"| `{profile}` |"))
        s = settings("ch1", profile)
        assert row.split(" | ")[1] == f"{s.finetune.stop_at:.2f}", row
        assert f"{s.dynamics.max_random_cost:.2f} |" in row


def test_the_index_lists_the_scorecards_claims_with_their_numbers_and_words():
    from pathlib import Path

    index = (Path(__file__).resolve().parents[1] / "book" / "index.md").read_text()
    listed = re.findall(r"^(\d)\. \*\*(.+?)\*\*", index, re.M)
    assert listed == [(str(claim), title) for claim, (title, _, _) in CLAIMS.items()], listed
