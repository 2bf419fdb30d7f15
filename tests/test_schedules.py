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


# --- learning-rate schedules ------------------------------------------------------------------
from s2s_course.schedules import noam, warmup_inverse_sqrt  # noqa: E402


def test_noam_hand_values():
    """d_model=16, warmup=4: lr = 16^-0.5 * min(s^-0.5, s * 4^-1.5) = 0.25 * min(1/sqrt(s), s/8)."""
    lr = noam(16, warmup=4)
    assert lr(0) == pytest.approx(0.25 * 1 / 8)          # s=1: warming up
    assert lr(1) == pytest.approx(0.25 * 2 / 8)          # s=2
    assert lr(3) == pytest.approx(0.25 * 0.5)            # s=4 = warmup: both branches 1/2
    assert lr(15) == pytest.approx(0.25 * 0.25)          # s=16: decay 1/sqrt(16)
    assert lr(99) == pytest.approx(0.25 * 0.1)           # s=100
    assert noam(16, 4, factor=2.0)(15) == pytest.approx(2 * lr(15))
    assert isinstance(lr, Schedule) and "noam" in repr(lr) and "warmup=4" in repr(lr)


def test_noam_paper_setting_and_peak():
    d, w = 512, 4000
    lr = noam(d, warmup=w)
    assert lr(0) == pytest.approx(d ** -0.5 * w ** -1.5)
    assert lr(99_999) == pytest.approx(d ** -0.5 * 100_000 ** -0.5)
    values = lr.values(3 * w)
    peak = max(range(len(values)), key=values.__getitem__)
    assert peak == w - 1
    assert values[peak] == pytest.approx(1 / math.sqrt(d * w))
    assert all(a < b for a, b in zip(values[:w - 1], values[1:w]))       # strictly rising
    assert all(a > b for a, b in zip(values[w - 1:], values[w:]))       # then falling


def test_warmup_inverse_sqrt_peaks_at_peak_lr_and_matches_noam():
    lr = warmup_inverse_sqrt(1e-3, warmup=4)
    assert lr(0) == pytest.approx(2.5e-4)                 # (0 + 1) / 4 of the peak
    assert lr(3) == pytest.approx(1e-3)                   # the peak, at step warmup - 1
    assert lr(15) == pytest.approx(1e-3 * math.sqrt(4 / 16))
    assert max(lr.values(50)) == pytest.approx(1e-3)
    d, w = 64, 10
    ref = noam(d, warmup=w)
    same = warmup_inverse_sqrt(1 / math.sqrt(d * w), warmup=w)
    assert same.values(40) == pytest.approx(ref.values(40))
    assert "warmup_inverse_sqrt" in repr(lr)


@pytest.mark.parametrize("make, arg", [
    (lambda: noam(0), "d_model"),
    (lambda: noam(512.0), "d_model"),
    (lambda: noam(True), "d_model"),
    (lambda: noam(512, warmup=0), "warmup"),
    (lambda: noam(512, warmup=2.5), "warmup"),
    (lambda: noam(512, factor="x"), "factor"),
    (lambda: noam(512, factor=float("nan")), "factor"),
    (lambda: warmup_inverse_sqrt(0.0, 10), "peak_lr"),
    (lambda: warmup_inverse_sqrt(-1e-3, 10), "peak_lr"),
    (lambda: warmup_inverse_sqrt("1e-3", 10), "peak_lr"),
    (lambda: warmup_inverse_sqrt(1e-3, 0), "warmup"),
    (lambda: warmup_inverse_sqrt(1e-3, None), "warmup"),
])
def test_lr_schedule_bad_arguments_name_the_argument(make, arg):
    with pytest.raises(ValueError, match=rf"^{arg} must"):
        make()
