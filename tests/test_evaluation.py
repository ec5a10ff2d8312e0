"""The scores on models whose answers are known: a bigram model with hand-set logits, and the
shipped tiny model on its own world."""

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import ivedu
from ivedu.evaluation import (AbilityScores, demonstrations, format_abilities, in_context_score,
                              instruction_following_score, knowledge_score, mean_abilities, score_abilities)
from ivedu.prompts import fewshot_prompt
from ivedu.study import ModelUnderStudy
from ivedu.tokenizer import build_tokenizer
from ivedu.world import Example, Task
from ivedu.prompts import TINY_FORMAT

FMT = TINY_FORMAT  # the tiny model's prompt format

WORDS = "a b c d e is of the x do it input output : . ;".split()


class Bigram(nn.Module):
    """A causal LM whose next-token logits depend only on the current token: ``table[token]``."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.table = nn.Parameter(torch.zeros(vocab_size, vocab_size))

    def forward(self, input_ids, attention_mask=None, position_ids=None, **kwargs):
        return SimpleNamespace(logits=self.table[input_ids])


@pytest.fixture(scope="module")
def known():
    """After ":" the model says "b" (then stops); after "is" it prefers "b" to "c" by 2 nats."""
    tok = build_tokenizer(WORDS)
    model = Bigram(len(tok))
    ids = tok.convert_tokens_to_ids
    with torch.no_grad():
        model.table[ids(":"), ids("b")] = 5.0
        model.table[ids("b"), tok.eos_token_id] = 10.0
        model.table[ids("c"), tok.eos_token_id] = 10.0
        model.table[ids("is"), ids("b")] = 3.0
        model.table[ids("is"), ids("c")] = 1.0
    task = Task("toy", "fact", ("do it",), ("the x of {x} is {y}",),
                train=(Example("d", "b", ("c",)), Example("e", "b", ("c",)), Example("c", "b", ("c",))),
                valid=(), test=(Example("a", "b", ("c",)), Example("d", "c", ("b",))))
    return model, tok, task


def softmax_at(model, row: str, col: str, tok) -> float:
    ids = tok.convert_tokens_to_ids
    return torch.softmax(model.table[ids(row)], -1)[ids(col)].item()


def test_instruction_following_score_on_known_answers(known):
    model, tok, task = known
    score = instruction_following_score(ModelUnderStudy(model, tok, FMT), task, "test")
    assert score.n == 2
    assert score.exact_match == 0.5  # "b" is right for "a", wrong for "d"
    assert score.first_token_accuracy == 0.5
    expected = (softmax_at(model, ":", "b", tok) + softmax_at(model, ":", "c", tok)) / 2
    assert score.answer_prob == pytest.approx(expected, rel=1e-5)


def test_knowledge_score_on_known_answers(known):
    model, tok, task = known
    score = knowledge_score(ModelUnderStudy(model, tok, FMT), task, "test")
    assert score.ranking_accuracy == 0.5  # "is" -> b beats c: right for "a", wrong for "d"
    p_b, p_c = softmax_at(model, "is", "b", tok), softmax_at(model, "is", "c", tok)
    assert p_b / p_c == pytest.approx(math.exp(2), rel=1e-5)
    assert score.gold_prob == pytest.approx((p_b + p_c) / 2, rel=1e-5)


def test_in_context_score_on_known_answers(known):
    model, tok, task = known
    score = in_context_score(ModelUnderStudy(model, tok, FMT), task, "test", k=2)
    assert score.n == 2 and score.exact_match == 0.5


def test_demonstrations_are_deterministic_from_train_and_never_the_query(known):
    _, _, task = known
    query = Example("c", "b")
    demos = demonstrations(task, query, k=2, seed=0)
    assert demos == demonstrations(task, query, k=2, seed=0)
    assert len(demos) == 2 and set(demos) <= set(task.train) and query.input not in {d.input for d in demos}
    assert fewshot_prompt(demos, "c", TINY_FORMAT).endswith("input : c output :")


def test_score_abilities_without_demonstrations_leaves_in_context_empty(known):
    model, tok, task = known
    (row,) = score_abilities(ModelUnderStudy(model, tok, FMT), [task], "test", k=0)
    assert row.task == "toy" and row.if_exact_match == 0.5 and row.kn_ranking == 0.5
    assert math.isnan(row.icl_exact_match) and math.isnan(row.icl_answer_prob)


def test_format_abilities_shows_before_and_after_and_refuses_rows_of_different_tasks():
    a = AbilityScores("capital", 1, 1, 1, 1, 1, 1)
    b = AbilityScores("plural", 0, 0, 0, 0, 0, 0)
    assert "1.00 -> 0.00" in format_abilities([a], [AbilityScores("capital", 0, 0, 0, 0, 0, 0)])
    with pytest.raises(ValueError, match="do not match"):
        format_abilities([a], [b])


def test_the_shipped_model_follows_and_knows_its_world():
    model, tok = ivedu.load_model("tiny")
    world = ivedu.build_world(0)
    tasks = [world.task("continent"), world.task("last")]
    rows = score_abilities(ModelUnderStudy(model, tok, FMT), tasks, "test", k=4)
    means = mean_abilities(rows)
    assert means["if_exact_match"] >= 0.9 and means["kn_ranking"] >= 0.95
    assert all(0 <= v <= 1 for v in means.values())
    # The new task it was never taught: the answer is known to be out of reach.
    assert instruction_following_score(ModelUnderStudy(model, tok, FMT), world.task("first_french"),
                                       "test").exact_match < 0.2


def test_scores_build_their_prompts_in_the_given_format(tiny, world, monkeypatch):
    import ivedu.evaluation as evaluation
    from ivedu.prompts import PromptFormat

    seen = []

    def capture(lm, name, prompts, golds):
        seen.extend(prompts)
        return evaluation.InstructionScore(name, len(prompts), 0.0, 0.0, 0.0)

    monkeypatch.setattr(evaluation, "_generation_score", capture)
    qa = PromptFormat(input_prefix="Q:", output_prefix="A:", separator="\n", instruction_end="\n")
    model, tokenizer = tiny
    task = world.task("capital")
    evaluation.instruction_following_score(ModelUnderStudy(model, tokenizer, qa), task, "valid")
    evaluation.in_context_score(ModelUnderStudy(model, tokenizer, qa), task, "valid", k=2)
    assert seen and all(p.startswith("Q:") and p.endswith("A:") for p in seen)
    assert not any("input :" in p for p in seen)


def test_known_examples_keep_exactly_what_the_model_answers_right_under_its_instruction(tiny, world):
    from ivedu.evaluation import exact_match, greedy_answers, known_examples, split_sizes
    from ivedu.prompts import instructed_prompt

    model, tokenizer = tiny
    task = world.task("antonym")
    known = known_examples(ModelUnderStudy(model, tokenizer, FMT), task)
    for split in ("train", "valid", "test"):
        examples = task.split(split)
        golds = [ex.output for ex in examples]
        prompts = [instructed_prompt(task, ex.input, 0, TINY_FORMAT) for ex in examples]
        answers = greedy_answers(ModelUnderStudy(model, tokenizer, FMT), prompts, golds)
        right = exact_match(answers, golds)
        assert known.split(split) == tuple(ex for ex, ok in zip(examples, right) if ok)
    assert 0 < split_sizes(known)["test"] <= split_sizes(task)["test"]


def test_known_examples_refuse_an_echo_that_starts_like_the_answer(known):
    from dataclasses import replace

    from ivedu.evaluation import known_examples

    model, tok, task = known  # the model answers "b" to every instructed prompt
    echo = replace(task, train=(), valid=(), test=(Example("a", "b", ("c",)), Example("b", "b d", ("c",))))
    # "b d" starts with the model's answer "b" (the first-token rule would keep it); the whole answer is wrong
    assert known_examples(ModelUnderStudy(model, tok, FMT), echo).test == (echo.test[0],)


def test_exact_match_ignores_spacing_and_a_final_full_stop_but_not_case():
    from ivedu.evaluation import exact_match, normalise_answer

    assert normalise_answer("  Laugh. ") == "Laugh" and normalise_answer("Washington, D.C.") == "Washington, D.C"
    assert exact_match(["Laugh.", "laugh", "Oui !", "b  d", "b."], ["Laugh", "Laugh", "Oui", "b d", "b d"]) == \
        [True, False, True, True, False]


def test_a_task_the_model_cannot_do_at_all_is_refused_by_name(tiny, world):
    from dataclasses import replace

    from ivedu.evaluation import known_examples

    model, tokenizer = tiny
    task = world.task("capital")
    wrong = replace(task, train=(), valid=(), test=tuple(Example(ex.input, "banana") for ex in task.test[:3]))
    with pytest.raises(ValueError, match="none of task 'capital'"):
        known_examples(ModelUnderStudy(model, tokenizer, FMT), wrong)


def test_survey_task_reports_what_the_first_token_rule_credits_alone(known):
    from dataclasses import replace

    from ivedu.evaluation import survey_task

    model, tok, task = known  # the model answers "b" to every instructed prompt
    echo = replace(task, test=task.test + (Example("b", "b d", ("c",)),))  # the answer starts like its input
    survey = survey_task(ModelUnderStudy(model, tok, FMT), echo, "test")
    assert (survey.n, survey.first_token, survey.exact_match) == (3, 2 / 3, 1 / 3)
    assert survey.copies == 1 / 3, "'b' repeats the third input"
    assert survey.first_token_only == 1 / 3, "the third answer's first token is right, the answer is not"
    assert survey_task(ModelUnderStudy(model, tok, FMT), echo, "test", n=1).n == 1
    with pytest.raises(ValueError, match="no examples in split 'valid'"):
        survey_task(ModelUnderStudy(model, tok, FMT), echo, "valid")


def test_exact_match_score_is_the_instruction_scores_exact_match(known):
    from ivedu.evaluation import exact_match_score

    model, tok, task = known
    assert exact_match_score(ModelUnderStudy(model, tok, FMT), task, "test") == 0.5
    assert exact_match_score(ModelUnderStudy(model, tok, FMT), task, "test") == \
        instruction_following_score(ModelUnderStudy(model, tok, FMT), task, "test").exact_match
