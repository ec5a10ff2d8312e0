"""The tiny-instruct world: deterministic, held-out splits really held out, one vocabulary."""

from ivedu.prompts import TINY_FORMAT, bare_prompt, fewshot_prompt, instructed_prompt, statement_prompt
from ivedu.tokenizer import world_tokenizer
from ivedu.toy import statement_coverage
from ivedu.world import build_world


def test_same_seed_same_world_other_seed_other_split():
    assert build_world(0) == build_world(0)
    a, b = build_world(0), build_world(1)
    assert [t.train for t in a.tasks] != [t.train for t in b.tasks]


def test_world_has_enough_general_tasks_each_with_two_phrasings():
    world = build_world(0)
    assert len(world.general) >= 10
    assert {t.kind for t in world.general} >= {"fact", "classification", "list", "format"}
    for task in world.tasks:
        assert len(task.instructions) >= 2, task.name
        assert len(set(task.instructions)) == len(task.instructions), task.name
    assert len(world.new) >= 3
    assert not {t.name for t in world.new} & {t.name for t in world.general}


def test_heldout_inputs_never_appear_in_training_inputs():
    for task in build_world(0).tasks:
        train = {ex.input for ex in task.train}
        valid = {ex.input for ex in task.valid}
        test = {ex.input for ex in task.test}
        assert valid and test, task.name
        assert not train & valid and not train & test and not valid & test, task.name


def test_heldout_facts_are_known_only_from_statements():
    world = build_world(0)
    coverage = statement_coverage(world)
    for task in world.general:
        covered = {ex.input for ex in coverage[task.name]}
        if task.kind in ("fact", "classification"):
            assert {ex.input for ex in task.split("heldout")} <= covered, task.name
        else:
            assert not {ex.input for ex in task.split("heldout")} & covered, task.name


def test_distractors_are_wrong_answers_of_the_same_task():
    for task in build_world(0).tasks:
        answers = {ex.output for ex in task.train + task.valid + task.test}
        for ex in task.train + task.valid + task.test:
            assert ex.output not in ex.distractors, (task.name, ex)
            assert ex.distractors, (task.name, ex)
            if task.kind in ("fact", "classification"):
                assert set(ex.distractors) <= answers | {ex.input}, (task.name, ex)


def test_every_prompt_word_is_one_known_token():
    world = build_world(0)
    tokenizer = world_tokenizer(world)
    unk = tokenizer.unk_token_id
    for task in world.tasks:
        ex = task.test[0]
        for text in (instructed_prompt(task, ex.input, 1, TINY_FORMAT), bare_prompt(ex.input, TINY_FORMAT),
                     fewshot_prompt(task.train[:2], ex.input, TINY_FORMAT), statement_prompt(task, ex.input), ex.output):
            ids = tokenizer.encode(text)
            assert unk not in ids, text
            assert ids[0] == tokenizer.bos_token_id
            assert len(ids) == len(text.split()) + 1, text


def test_prompt_formats_read_as_documented():
    world = build_world(0)
    capital = world.task("capital")
    assert instructed_prompt(capital, "peru", 0, TINY_FORMAT) == "input : peru . what is its capital . output :"
    assert bare_prompt("peru", TINY_FORMAT) == "input : peru output :"
    assert statement_prompt(capital, "peru") == "the capital of peru is"
    demo = capital.train[0]
    assert fewshot_prompt([demo], "peru", TINY_FORMAT) == f"input : {demo.input} output : {demo.output} ; input : peru output :"
