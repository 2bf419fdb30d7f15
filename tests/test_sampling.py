"""decode.top_k_filter, top_p_filter and sample_next against hand-computed cases and a brute-force
reference written independently (a Python loop over the sorted probabilities)."""
import math

import pytest
import torch

from s2s_course.decode import sample_next, top_k_filter, top_p_filter

INF = float("-inf")


def kept(filtered: torch.Tensor) -> list[list[int]]:
    return [torch.nonzero(row != INF).flatten().tolist() for row in filtered.reshape(-1, filtered.size(-1))]


def brute_top_p(probs: list[float], p: float) -> set[int]:
    """The smallest set of most likely tokens with mass >= p, plus everything tied with its last."""
    order = sorted(range(len(probs)), key=lambda i: -probs[i])
    chosen, mass = [], 0.0
    for i in order:
        chosen.append(i)
        mass += probs[i]
        if mass >= p - 1e-9:
            break
    last = probs[chosen[-1]]
    return {i for i, q in enumerate(probs) if q >= last - 1e-9}


# --- top-k ----------------------------------------------------------------------------------------

def test_top_k_by_hand():
    logits = torch.tensor([[1.0, 4.0, 2.0, 3.0]])
    assert kept(top_k_filter(logits, 1)) == [[1]]
    assert kept(top_k_filter(logits, 2)) == [[1, 3]]
    assert kept(top_k_filter(logits, 3)) == [[1, 2, 3]]
    out = top_k_filter(logits, 2)
    assert out[0, 1] == 4.0 and out[0, 3] == 3.0           # kept values are untouched


def test_top_k_keeps_ties_and_k_at_least_v_keeps_all():
    logits = torch.tensor([[1.0, 3.0, 2.0, 3.0]])
    assert kept(top_k_filter(logits, 1)) == [[1, 3]]        # both maxima: ties are kept
    assert kept(top_k_filter(logits, 3)) == [[1, 2, 3]]
    assert torch.equal(top_k_filter(logits, 4), logits)
    assert torch.equal(top_k_filter(logits, 10), logits)


def test_top_k_rows_are_independent_and_input_unchanged():
    torch.manual_seed(0)
    logits = torch.randn(5, 11)
    before = logits.clone()
    out = top_k_filter(logits, 3)
    assert torch.equal(logits, before)
    for b in range(5):
        assert torch.equal(out[b], top_k_filter(logits[b:b + 1], 3)[0])
        assert set(kept(out[b:b + 1])[0]) == set(logits[b].topk(3).indices.tolist())


@pytest.mark.parametrize("k", [0, -1, 1.5, True])
def test_top_k_rejects_bad_k(k):
    with pytest.raises(ValueError, match="k must"):
        top_k_filter(torch.zeros(1, 3), k)


# --- top-p ----------------------------------------------------------------------------------------

PROBS = [0.05, 0.5, 0.15, 0.3]            # sorted: 0.5 (1), 0.3 (3), 0.15 (2), 0.05 (0)


@pytest.mark.parametrize("p, expected", [
    (0.01, [1]),            # the most likely token is always kept
    (0.4, [1]),             # 0.5 alone crosses 0.4
    (0.6, [1, 3]),          # 0.5 < 0.6: the token crossing p (0.3) is included
    (0.9, [1, 2, 3]),       # 0.8 < 0.9: add 0.15
    (0.97, [0, 1, 2, 3]),
    (1.0, [0, 1, 2, 3]),    # p = 1 keeps everything
])
def test_top_p_by_hand(p, expected):
    logits = torch.tensor([PROBS]).log()
    assert kept(top_p_filter(logits, p)) == [expected]
    assert set(expected) == brute_top_p(PROBS, p)


def test_top_p_keeps_the_kept_values_and_ties():
    logits = torch.tensor([PROBS]).log()
    out = top_p_filter(logits, 0.6)
    assert torch.equal(out[0, [1, 3]], logits[0, [1, 3]])
    tied = torch.tensor([[0.4, 0.2, 0.2, 0.2]]).log()     # 0.4 + one 0.2 crosses 0.5; all 0.2s tie
    assert kept(top_p_filter(tied, 0.5)) == [[0, 1, 2, 3]]
    assert kept(top_p_filter(tied, 0.3)) == [[0]]


def test_top_p_against_brute_force_on_random_rows():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(20, 9, generator=g) * 2
    for p in (0.1, 0.5, 0.75, 0.9, 0.99):
        out = top_p_filter(logits, p)
        for b in range(20):
            probs = torch.softmax(logits[b], -1).tolist()
            assert set(kept(out[b:b + 1])[0]) == brute_top_p(probs, p), (p, b)


def test_top_p_rows_independent_input_unchanged_and_minus_inf_stays():
    logits = torch.tensor([PROBS, [0.25, 0.25, 0.25, 0.25]]).log()
    logits[1, 0] = INF                                       # an already forbidden token
    before = logits.clone()
    out = top_p_filter(logits, 0.6)
    assert torch.equal(logits, before)
    assert kept(out) == [[1, 3], [1, 2, 3]]                  # row 2: 1/3 each, all tie


@pytest.mark.parametrize("p", [0.0, -0.1, 1.5, "0.5"])
def test_top_p_rejects_bad_p(p):
    with pytest.raises(ValueError, match="p must"):
        top_p_filter(torch.zeros(1, 3), p)


# --- sample_next ----------------------------------------------------------------------------------

def test_temperature_zero_and_k_one_are_greedy():
    torch.manual_seed(0)
    logits = torch.randn(6, 13)
    greedy = logits.argmax(-1)
    assert torch.equal(sample_next(logits, temperature=0), greedy)
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        assert torch.equal(sample_next(logits, top_k=1, generator=g), greedy)
        assert torch.equal(sample_next(logits, top_p=1e-6, generator=g), greedy)


def test_samples_follow_the_filtered_distribution():
    logits = torch.tensor([PROBS]).log().expand(40000, 4)
    g = torch.Generator().manual_seed(0)
    draws = sample_next(logits, top_p=0.6, generator=g)
    counts = torch.bincount(draws, minlength=4).float() / len(draws)
    expected = torch.tensor([0.0, 0.5 / 0.8, 0.0, 0.3 / 0.8])
    assert (counts - expected).abs().max() < 0.01
    draws = sample_next(logits, temperature=2.0, generator=torch.Generator().manual_seed(1))
    tempered = torch.tensor(PROBS).pow(0.5)
    tempered /= tempered.sum()                               # softmax(log p / 2) = sqrt(p) / sum
    counts = torch.bincount(draws, minlength=4).float() / len(draws)
    assert (counts - tempered).abs().max() < 0.01
    draws = sample_next(logits, top_k=2, temperature=0.5, generator=torch.Generator().manual_seed(2))
    sharp = torch.tensor([0.0, 0.25, 0.0, 0.09]) / 0.34     # p^2 over the two kept tokens
    counts = torch.bincount(draws, minlength=4).float() / len(draws)
    assert (counts - sharp).abs().max() < 0.01


def test_sampling_is_reproducible_with_a_generator_and_leaves_logits_alone():
    torch.manual_seed(0)
    logits = torch.randn(8, 30)
    before = logits.clone()
    a = sample_next(logits, 0.9, 10, 0.8, torch.Generator().manual_seed(7))
    b = sample_next(logits, 0.9, 10, 0.8, torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and a.shape == (8,) and a.dtype == torch.long
    assert torch.equal(logits, before)


def test_sample_next_rejects_bad_arguments():
    with pytest.raises(ValueError, match="logits must be"):
        sample_next(torch.zeros(3))
    with pytest.raises(ValueError, match="logits must be"):
        sample_next(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="temperature"):
        sample_next(torch.zeros(2, 3), temperature=-1.0)
    with pytest.raises(ValueError, match="temperature"):
        sample_next(torch.zeros(2, 3), temperature=math.nan)
