import math

import pytest
import sacrebleu

from s2s_course.metrics import (accuracy_by_length, bleu_signature, corpus_bleu, corpus_chrf,
                                exact_match, lowercase_token_bleu, perplexity, token_accuracy)

# sacrebleu's README example
SYS = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
REF = ["The dog bit the man.", "It was not unexpected.", "The man bit him first."]


# --- token-level metrics, hand-computed -------------------------------------------------------

def test_token_accuracy_hand_cases():
    assert token_accuracy([[1, 2, 3]], [[1, 2, 3]]) == 1.0
    assert token_accuracy([[1, 2, 9]], [[1, 2, 3, 4]]) == 0.5       # stops early: 2 / 4
    assert token_accuracy([[1, 2, 3, 4, 5]], [[1, 2]]) == 1.0       # extra tokens not counted
    assert token_accuracy([[], [7, 8]], [[1, 2], [7, 0]]) == 0.25   # micro average: 1 / 4
    assert token_accuracy([[2, 1]], [[1, 2]]) == 0.0                 # position-wise
    assert token_accuracy([list("abc")], [list("abd")]) == pytest.approx(2 / 3)


def test_exact_match_hand_cases():
    assert exact_match([[1, 2], [3]], [[1, 2], [3, 4]]) == 0.5
    assert exact_match([[1, 2, 3]], [[1, 2]]) == 0.0
    assert exact_match([(1, 2)], [[1, 2]]) == 1.0


def test_accuracy_by_length_groups_and_sorts():
    preds = [[1, 2], [1, 9], [5, 6, 7], [4]]
    refs = [[1, 2], [1, 2], [5, 6, 0], [4]]
    got = accuracy_by_length(preds, refs, lengths=[5, 5, 2, 9])
    assert list(got) == [2, 5, 9]
    assert got[5] == (0.5, 0.75, 2)
    assert got[2] == (0.0, pytest.approx(2 / 3), 1)
    assert got[9] == (1.0, 1.0, 1)
    by_ref = accuracy_by_length(preds, refs)  # default: reference length
    assert list(by_ref) == [1, 2, 3] and by_ref[2][2] == 2
    empty_ref = accuracy_by_length([[1]], [[]])
    assert empty_ref[0][0] == 0.0 and math.isnan(empty_ref[0][1])


def test_perplexity():
    assert perplexity(0.0) == 1.0
    assert perplexity(math.log(20)) == pytest.approx(20.0)
    assert perplexity(1000.0) == math.inf
    for bad in (-0.1, float("nan"), "1", None):
        with pytest.raises(ValueError, match="mean_nll"):
            perplexity(bad)


@pytest.mark.parametrize("fn", [token_accuracy, exact_match, accuracy_by_length])
def test_empty_and_mismatched_inputs(fn):
    with pytest.raises(ValueError, match="preds is empty"):
        fn([], [[1]])
    with pytest.raises(ValueError, match="refs is empty"):
        fn([[1]], [])
    with pytest.raises(ValueError, match="same length, got 2 and 1"):
        fn([[1], [2]], [[1]])
    with pytest.raises(TypeError, match="preds must be a list"):
        fn("abc", ["abc"])


def test_token_accuracy_all_empty_refs_and_bad_lengths():
    with pytest.raises(ValueError, match="refs contains only empty"):
        token_accuracy([[1]], [[]])
    with pytest.raises(ValueError, match="lengths must have one entry per example"):
        accuracy_by_length([[1]], [[1]], lengths=[1, 2])


# --- sacrebleu-backed metrics ------------------------------------------------------------------

def test_corpus_bleu_matches_sacrebleu():
    ours = corpus_bleu(SYS, REF)
    theirs = sacrebleu.corpus_bleu(SYS, [REF])
    assert ours.score == pytest.approx(theirs.score)
    assert ours.score == pytest.approx(45.0675, abs=1e-3)  # sacrebleu 2.x, one reference
    assert isinstance(ours, sacrebleu.metrics.bleu.BLEUScore)
    low = corpus_bleu(SYS, REF, tokenize="intl", lowercase=True)
    assert low.score == pytest.approx(sacrebleu.corpus_bleu(SYS, [REF], tokenize="intl", lowercase=True).score)


def test_corpus_bleu_identical_is_100_and_disjoint_is_0():
    assert corpus_bleu(REF, REF).score == pytest.approx(100.0)
    assert corpus_bleu(["a b c d e"], ["v w x y z"]).score == pytest.approx(0.0)


def test_corpus_chrf_matches_sacrebleu():
    assert corpus_chrf(SYS, REF).score == pytest.approx(sacrebleu.corpus_chrf(SYS, [REF]).score)
    plus = corpus_chrf(SYS, REF, word_order=2)
    assert plus.score == pytest.approx(sacrebleu.corpus_chrf(SYS, [REF], word_order=2).score)
    assert corpus_chrf(REF, REF).score == pytest.approx(100.0)
    with pytest.raises(ValueError, match="word_order"):
        corpus_chrf(SYS, REF, word_order=5)


def test_korean_chrf_and_char_bleu():
    hyp, ref = ["나는 학교에 간다"], ["나는 학교에 갑니다"]
    assert corpus_chrf(hyp, ref).score == pytest.approx(sacrebleu.corpus_chrf(hyp, [ref]).score)
    assert corpus_bleu(hyp, ref, tokenize="char").score == pytest.approx(
        sacrebleu.corpus_bleu(hyp, [ref], tokenize="char").score)


def test_bleu_signature():
    sig = bleu_signature()
    assert sig == f"nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:{sacrebleu.__version__}"
    assert "case:lc" in bleu_signature(lowercase=True)
    assert "tok:none" in bleu_signature(tokenize="none")


@pytest.mark.parametrize("fn", [corpus_bleu, corpus_chrf])
def test_bleu_input_validation(fn):
    with pytest.raises(ValueError, match="hyps is empty"):
        fn([], [])
    with pytest.raises(ValueError, match="refs is empty"):
        fn(["a"], [])
    with pytest.raises(ValueError, match="same length"):
        fn(["a", "b"], ["a"])
    with pytest.raises(TypeError, match=r"hyps\[0\] is list"):
        fn([["a", "b"]], ["a b"])


def test_bad_tokenize_names_the_argument():
    with pytest.raises(ValueError, match="tokenize must be one of"):
        corpus_bleu(SYS, REF, tokenize="moses")
    with pytest.raises(ValueError, match="tokenize must be one of"):
        bleu_signature(tokenize="moses")


def test_lowercase_token_bleu():
    hyps = [["The", "dog", "bit", "the", "man", "."], ["A", "cat", "."]]
    refs = [["the", "dog", "bit", "the", "man", "."], ["a", "cat", "sat", "."]]
    expected = sacrebleu.corpus_bleu(["the dog bit the man .", "a cat ."],
                                      [["the dog bit the man .", "a cat sat ."]], tokenize="none")
    assert lowercase_token_bleu(hyps, refs).score == pytest.approx(expected.score)
    assert lowercase_token_bleu(refs, refs).score == pytest.approx(100.0)
    with pytest.raises(ValueError, match="hyps_tokens is empty"):
        lowercase_token_bleu([], [])
    with pytest.raises(TypeError, match="refs_tokens must be a list of token lists"):
        lowercase_token_bleu(hyps, ["the dog", "a cat"])


def test_lowercase_token_bleu_does_not_warn_about_tokenized_input(caplog):
    import logging

    from s2s_course.metrics import lowercase_token_bleu

    with caplog.at_level(logging.WARNING, logger="sacrebleu"):
        # sacrebleu warns once 100 hypotheses end in a tokenized period
        score = lowercase_token_bleu([["a", "dog", "runs", "."]] * 120, [["a", "dog", "runs", "."]] * 120)
    assert score.score == pytest.approx(100.0)
    assert not [r for r in caplog.records if "detokenize" in r.getMessage()]


def test_chrf_signature_names_the_settings():
    from s2s_course.metrics import chrf_signature

    sig = chrf_signature()
    assert sig.startswith("nrefs:1|case:mixed|") and "nc:6|nw:0" in sig
    assert "nw:2" in chrf_signature(word_order=2)        # chrF++
    assert "case:lc" in chrf_signature(lowercase=True)
