"""The scorecard (``ivedu.scorecard``): verdicts from results by the stated bars."""

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
