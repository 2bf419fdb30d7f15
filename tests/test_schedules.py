import math

import pytest

from s2s_course.schedules import Schedule, constant, exponential, inverse_sigmoid, linear


def test_constant_is_constant():
    tf = constant(0.25)
    assert [tf(i) for i in (0, 1, 10_000)] == [0.25, 0.25, 0.25]
    assert repr(tf) == "constant(p=0.25)" == tf.name


def test_linear_hand_values_and_clamp():
    tf = linear(1.0, 0.0, steps=10)
    assert tf(0) == 1.0
    assert tf(5) == pytest.approx(0.5)
    assert tf(10) == 0.0
    assert tf(1000) == 0.0  # clamped at end
    up = linear(start=0.2, end=0.8, steps=4)
    assert [round(v, 10) for v in up.values(6)] == [0.2, 0.35, 0.5, 0.65, 0.8, 0.8]
    assert repr(tf) == "linear(start=1, end=0, steps=10)"


def test_exponential_is_k_to_the_i():
    tf = exponential(0.9)
    assert tf(0) == 1.0
    assert tf(2) == pytest.approx(0.81)
    assert tf(10) == pytest.approx(0.9 ** 10)
    assert "exponential" in repr(tf) and "0.9" in repr(tf)


def test_inverse_sigmoid_matches_formula_and_decreases():
    k = 10.0
    tf = inverse_sigmoid(k)
    for i in (0, 1, 7, 50, 100):
        assert tf(i) == pytest.approx(k / (k + math.exp(i / k)))
    assert tf(0) == pytest.approx(10 / 11)
    values = tf.values(200)
    assert all(a > b for a, b in zip(values, values[1:]))
    assert inverse_sigmoid(1)(10**6) == 0.0  # no OverflowError far out
    assert repr(tf) == "inverse_sigmoid(k=10)"


def test_values_are_probabilities():
    for tf in (constant(1.0), linear(steps=3), exponential(0.5), inverse_sigmoid(3)):
        assert isinstance(tf, Schedule)
        assert all(0.0 <= v <= 1.0 and isinstance(v, float) for v in tf.values(50))


@pytest.mark.parametrize("make, arg", [
    (lambda: constant(1.5), "p"),
    (lambda: constant(-0.1), "p"),
    (lambda: constant("a"), "p"),
    (lambda: constant(True), "p"),
    (lambda: linear(start=2.0), "start"),
    (lambda: linear(end=float("nan")), "end"),
    (lambda: linear(steps=0), "steps"),
    (lambda: linear(steps=2.5), "steps"),
    (lambda: exponential(1.0), "k"),
    (lambda: exponential(0.0), "k"),
    (lambda: inverse_sigmoid(0.5), "k"),
    (lambda: inverse_sigmoid(float("inf")), "k"),
])
def test_bad_arguments_name_the_argument(make, arg):
    with pytest.raises(ValueError, match=rf"^{arg} must"):
        make()


@pytest.mark.parametrize("step", [-1, 1.5, True])
def test_bad_step(step):
    with pytest.raises(ValueError, match="step must be a non-negative int"):
        constant(1.0)(step)
