"""Shortcut controls (``ivedu.controls``): each checked on answers whose scores are known by hand."""

import math

import numpy as np
import pytest

from ivedu.controls import (FEW_ANSWERS, balanced_accuracy, bootstrap_interval, constant_answer, constant_score,
                            grouped_bootstrap_interval, paired_bootstrap_interval, starts_right_share)
from ivedu.world import Example, Task


def task(train, test=()):
    return Task("toy", "label", ("label it",), ("{x} is {y}",),
                train=tuple(Example(str(i), y, ()) for i, y in enumerate(train)), valid=(),
                test=tuple(Example(str(i), y, ()) for i, y in enumerate(test)))


def test_the_constant_answer_is_the_commonest_train_answer_normalised_ties_to_the_first_sorted():
    assert constant_answer(task(["positive", "negative", "positive."])) == "positive"
    assert constant_answer(task(["b", "a", "b", "a"])) == "a", "a tie goes to the first in sorted order"
    skewed = task(["positive"] * 3 + ["negative"], test=["positive"] * 4 + ["negative"])
    assert constant_score(skewed, "test") == pytest.approx(0.8)
    assert constant_score(skewed, "train") == pytest.approx(0.75)
    with pytest.raises(ValueError, match="no train examples"):
        constant_answer(task([], test=["a"]))
    with pytest.raises(ValueError, match="no examples in split 'valid'"):
        constant_score(skewed, "valid")


def test_answering_the_constant_gets_one_over_the_number_of_labels_in_balanced_accuracy():
    golds = ["positive"] * 8 + ["negative"] * 2
    assert balanced_accuracy(["positive"] * 10, golds) == pytest.approx(0.5)
    assert balanced_accuracy(golds, golds) == 1.0
    three = ["a", "b", "c", "a", "a"]
    assert balanced_accuracy(["a"] * 5, three) == pytest.approx(1 / 3)
    # per-answer recall: a 1/2 (one of two), b 1/1 -> mean 3/4, whereas exact match is 2/3
    assert balanced_accuracy(["a", "x", "b."], ["a", "a", "b"]) == pytest.approx(0.75)


def test_balanced_accuracy_means_nothing_with_many_distinct_answers():
    many = [str(i) for i in range(FEW_ANSWERS + 1)]
    assert balanced_accuracy(many, many) is None
    assert balanced_accuracy(many[:-1], many[:-1]) == 1.0
    with pytest.raises(ValueError, match="2 predictions for 3"):
        balanced_accuracy(["a", "b"], ["a", "b", "c"])


def test_starts_right_share_counts_first_token_right_and_answer_wrong_only():
    first = [True, True, False, True]
    exact = [True, False, False, False]
    assert starts_right_share(first, exact) == pytest.approx(0.5)
    assert starts_right_share([False], [False]) == 0.0
    with pytest.raises(ValueError, match="no answers"):
        starts_right_share([], [])


def test_the_bootstrap_of_a_constant_sample_is_a_point_and_an_interval_covers_the_mean():
    assert bootstrap_interval([0.3] * 20) == pytest.approx((0.3, 0.3))
    values = np.random.default_rng(1).binomial(1, 0.6, size=200).astype(float)
    low, high = bootstrap_interval(values)
    assert low < values.mean() < high
    # the standard error of a mean of 200 Bernoulli(0.6) is about 0.035: a 95% interval spans ~0.14
    assert 0.08 < high - low < 0.2
    assert bootstrap_interval(values, seed=3) == bootstrap_interval(values, seed=3), "seeded"
    narrow = bootstrap_interval(values, level=0.5)
    assert low < narrow[0] < narrow[1] < high


def test_the_paired_bootstrap_resamples_pairs():
    a = [1.0, 0.0, 1.0, 1.0, 0.0, 1.0]
    assert paired_bootstrap_interval(a, a) == (0.0, 0.0), "an effect against itself is exactly nothing"
    shifted = [x - 0.25 for x in a]
    assert paired_bootstrap_interval(a, shifted) == pytest.approx((0.25, 0.25)), \
        "a constant difference is a point, however much a and b vary"
    with pytest.raises(ValueError, match="differ in length"):
        paired_bootstrap_interval([1.0], [1.0, 0.0])


def test_a_grouped_bootstrap_weights_groups_equally():
    low, high = grouped_bootstrap_interval([[1.0] * 50, [0.0] * 2])
    assert low == high == pytest.approx(0.5), "two constant groups: the mean of their means, whatever their sizes"
    with pytest.raises(ValueError, match="no groups"):
        grouped_bootstrap_interval([])


@pytest.mark.parametrize("bad, match", [([], "no values"), ([1.0, math.nan], "NaN")])
def test_the_bootstrap_refuses_empty_or_nan_input(bad, match):
    with pytest.raises(ValueError, match=match):
        bootstrap_interval(bad)
    with pytest.raises(ValueError, match="level"):
        bootstrap_interval([1.0], level=1.0)
