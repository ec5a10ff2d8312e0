"""Chapter 3's checkers pass on the reference solutions and fail on planted wrong answers."""

import numpy as np
import pytest

from ivedu.dynamics import parameter_distance, projections, r_squared
from ivedu.exercises import ExerciseError
from ivedu.exercises.ch3 import check_parameter_distance, check_projection, check_r_squared


def test_parameter_distance_checker():
    check_parameter_distance(parameter_distance)

    def per_parameter_roots(a, b):  # planted: sums the per-parameter norms instead of one root
        theirs = dict(b.named_parameters())
        return float(sum((theirs[n] - p).detach().norm() for n, p in a.named_parameters()))

    with pytest.raises(ExerciseError, match="(?s)damaged copy.*Hint"):
        check_parameter_distance(per_parameter_roots)


def test_r_squared_checker():
    check_r_squared(r_squared)

    def correlation(x, y):  # planted: r instead of r², negative on a falling line
        return float(np.corrcoef(x, y)[0, 1])

    with pytest.raises(ExerciseError, match="falling line"):
        check_r_squared(correlation)


def test_projection_checker():
    check_projection(projections)

    def unnormalised(states, directions):  # planted: forgets to make the directions unit length
        return (states * directions.float()).sum(-1).mean(-1)

    with pytest.raises(ExerciseError, match="norm 7"):
        check_projection(unnormalised)


def test_a_stub_gets_a_clear_message():
    def stub(x, y):
        raise NotImplementedError("your code here")

    with pytest.raises(ExerciseError, match="NotImplementedError"):
        check_r_squared(stub)
