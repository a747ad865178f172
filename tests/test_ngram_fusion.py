"""The n-gram LM over output symbols and its shallow fusion in the CTC prefix search.

    .venv/bin/python -m pytest tests/test_ngram_fusion.py -q
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from pipeline.decoding.ctc import make_decoder
from pipeline.decoding.ctc_beam import beam_search
from pipeline.decoding.ngram import NgramLM
from tests.test_ctc_decoding import reference_prefix_beam_search


def reference_fused_search(log_probs: torch.Tensor, beam: int, lm: NgramLM, alpha: float, beta: float):
    """The textbook search (blank 0) with alpha * log P_LM(c | prefix) + beta added to every extension."""
    return reference_prefix_beam_search(log_probs, beam, 0, lambda prefix, c: alpha * lm.log_prob(list(prefix), c) + beta)


def corpus(seed: int = 0, classes: int = 6) -> list[list[int]]:
    """Sentences from a bigram chain that strongly prefers c -> c+1 (mod the non-blank symbols)."""
    rng = np.random.default_rng(seed)
    sentences = []
    for _ in range(300):
        token, sentence = int(rng.integers(1, classes)), []
        for _ in range(int(rng.integers(3, 12))):
            sentence.append(token)
            token = token % (classes - 1) + 1 if rng.random() < 0.8 else int(rng.integers(1, classes))
        sentences.append(sentence)
    return sentences


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_every_context_is_a_distribution_over_the_symbols(order):
    lm = NgramLM.estimate(corpus(), num_classes=6, order=order)
    assert lm.table.shape == (6 ** (order - 1), 6)
    assert np.all(np.isneginf(lm.table[:, 0]))  # blank is never predicted
    assert np.allclose(np.exp(lm.table[:, 1:].astype(np.float64)).sum(axis=1), 1.0, atol=1e-5)


def test_kneser_ney_by_hand():
    """Bigram on the corpus [1 2], [1 3] (blank 0 = sentence start), D = 0.75, 3 symbols.
    Unigram continuation counts: 1 follows only <s>, 2 and 3 only 1 -> N1+ = 1 each, total 3:
    P1(w) = (1 - .75)/3 + .75 * 3/3 * 1/3 = 1/3. P(2 | 1) = (1 - .75)/2 + .75 * 2/2 * 1/3 = .375."""
    lm = NgramLM.estimate([[1, 2], [1, 3]], num_classes=4, order=2)
    assert lm.log_prob([1], 2) == pytest.approx(math.log(0.375), abs=1e-6)
    assert lm.log_prob([], 1) == pytest.approx(math.log((2 - 0.75) / 2 + 0.75 / 2 / 3), abs=1e-6)
    assert lm.log_prob([2], 1) == pytest.approx(math.log(1 / 3), abs=1e-6)  # unseen history: the unigram


def test_learns_the_corpus_chain():
    lm = NgramLM.estimate(corpus(), num_classes=6, order=2)
    assert lm.log_prob([3], 4) > math.log(0.6) and lm.log_prob([3], 2) < math.log(0.15)


def test_orders_outside_the_dense_range_are_one_line():
    with pytest.raises(ValueError, match="decode.lm_order must be 1..4"):
        NgramLM.estimate([[1]], num_classes=41, order=5)


@pytest.mark.parametrize(("order", "alpha", "beta"), [(2, 0.8, 0.5), (3, 1.5, -0.3), (1, 0.5, 1.0)])
def test_fused_search_equals_a_reference_fused_search(order, alpha, beta):
    lm = NgramLM.estimate(corpus(), num_classes=6, order=order)
    g = torch.Generator().manual_seed(order)
    for trial in range(6):
        frames = 10 + trial
        log_probs = (2.0 * torch.randn(1, frames, 6, generator=g)).log_softmax(-1).double()
        expected, expected_score = reference_fused_search(log_probs[0], 5, lm, alpha, beta)
        result = beam_search(log_probs, torch.tensor([frames]), beam=5, ranks=1, lm=lm, alpha=alpha, beta=beta)
        assert result.tokens[0][0] == expected
        assert float(result.scores[0, 0]) == pytest.approx(expected_score, abs=1e-6)


def test_zero_weights_change_nothing():
    lm = NgramLM.estimate(corpus(), num_classes=6, order=3)
    log_probs = (2.0 * torch.randn(4, 30, 6, generator=torch.Generator().manual_seed(1))).log_softmax(-1)
    lengths = torch.tensor([30, 25, 12, 30])
    plain = beam_search(log_probs, lengths, beam=6)
    fused = beam_search(log_probs, lengths, beam=6, lm=lm, alpha=0.0, beta=0.0)
    assert plain.tokens == fused.tokens


def test_the_lm_pulls_an_ambiguous_frame_towards_the_chain():
    """One frame split evenly between 3 and 5 after a clear 2: the LM (2 -> 3 likely) decides for 3."""
    lm = NgramLM.estimate(corpus(), num_classes=6, order=2)
    probs = torch.full((1, 2, 6), 1e-4)
    probs[0, 0, 2] = 1.0
    probs[0, 1, 3] = probs[0, 1, 5] = 0.5
    log_probs = (probs / probs.sum(-1, keepdim=True)).log()
    decoder = make_decoder("asrpipe", beam=4, num_classes=6, lm=lm, alpha=1.0, beta=0.0)
    assert decoder.decode(log_probs, torch.tensor([2])) == [[2, 3]]
    with pytest.raises(ValueError, match="needs the asrpipe backend"):
        make_decoder("greedy", beam=1, lm=lm)


def test_workers_carry_the_lm():
    lm = NgramLM.estimate(corpus(), num_classes=6, order=3)
    log_probs = (2.0 * torch.randn(6, 40, 6, generator=torch.Generator().manual_seed(2))).log_softmax(-1)
    lengths = torch.tensor([40, 30, 20, 35, 10, 40])
    one = make_decoder("asrpipe", beam=5, num_classes=6, lm=lm, alpha=1.0, beta=0.5).decode(log_probs, lengths)
    two = make_decoder("asrpipe", beam=5, num_classes=6, workers=2, lm=lm, alpha=1.0, beta=0.5)
    try:
        assert two.decode(log_probs, lengths) == one
    finally:
        two.close()


# ---- in the decode stage -----------------------------------------------------------------------------------

from tests.test_pipeline_contract import finished_fixture, variant  # noqa: E402

finished = finished_fixture("demo-hw3p2")


def test_decode_stage_fuses_the_lm_named_in_its_folder(finished):
    _, _, pipeline = finished
    decode = pipeline.plan["decode"]
    assert decode.params["lm_order"] == 4 and decode.dir.name.startswith("beam4-asrpipe-lm4a1b3-")
    _, plain = variant(finished, "decode.lm_order=0", start="decode", stop="decode")
    assert plain.plan["decode"].dir.name.startswith("beam4-asrpipe-") and "lm" not in plain.plan["decode"].dir.name
    assert "lm_order" not in plain.plan["decode"].params  # no LM: the key is what it was before LMs existed
    with_lm = json.loads((decode.dir / "dev_results.json").read_text())["beam"]
    without = json.loads((plain.plan["decode"].dir / "dev_results.json").read_text())["beam"]
    assert with_lm != without


def test_lm_with_another_backend_is_one_line(finished):
    from pipeline.engine import EngineError

    with pytest.raises(EngineError, match="decode.backend=greedy: .*needs the asrpipe backend"):
        variant(finished, "decode.backend=greedy", start="decode", stop="decode")
