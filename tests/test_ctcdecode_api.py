"""`pipeline.decoding.CTCBeamDecoder`: ctcdecode's API on our search, and the search's exactness.

    .venv/bin/python -m pytest tests/test_ctcdecode_api.py -q

The recorded answers of the real ctcdecode 1.0.2 (tests/data/ctcdecode_reference.json, written by
tools/ctcdecode_reference.py) are checked everywhere; where ctcdecode itself is importable, it is also run live.
"""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from pipeline.decoding import CTCBeamDecoder
from pipeline.decoding.ctc_beam import beam_search, prune_classes
from pipeline.decoding.ctc_greedy import ctc_log_likelihood
from pipeline.decoding.ctc_synthetic import synthetic_ctc_batch
from tests.test_ctc_decoding import peaky_batch, reference_prefix_beam_search

REFERENCE = json.loads((Path(__file__).parent / "data" / "ctcdecode_reference.json").read_text())
HAVE_CTCDECODE = importlib.util.find_spec("ctcdecode") is not None


def labels(num_classes: int) -> list[str]:
    return [chr(0x4E00 + c) for c in range(num_classes)]


def reference_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return synthetic_ctc_batch(**REFERENCE["input"])


# ---- the documented outputs --------------------------------------------------------------------------------


def test_hand_checked_two_frames():
    """Frames (blank .5, a .4, b .1) twice: p("")=.25, p(a)=.56, p(b)=.11, p(ab)=p(ba)=.04; beam 3 keeps a, "", b."""
    frame = torch.tensor([0.5, 0.4, 0.1])
    probs = frame.repeat(1, 2, 1)
    results, scores, timesteps, out_lens = CTCBeamDecoder(["_", "a", "b"], beam_width=3).decode(probs)
    assert out_lens.tolist() == [[1, 0, 1]]
    assert results[0, 0, 0] == 1 and results[0, 2, 0] == 2
    assert scores[0].tolist() == pytest.approx([-math.log(0.56), -math.log(0.25), -math.log(0.11)], abs=1e-5)
    assert timesteps[0, 0, 0] == 0 and timesteps[0, 2, 0] == 0


def test_shapes_dtypes_and_padding():
    log_probs, lengths = synthetic_ctc_batch(5, 10, 30, 41, seed=1)
    lengths[2] = 0
    results, scores, timesteps, out_lens = CTCBeamDecoder(labels(41), beam_width=7, log_probs_input=True,
                                                          num_processes=1).decode(log_probs, lengths)
    batch, frames = log_probs.shape[:2]
    assert results.shape == timesteps.shape == (batch, 7, frames) and results.dtype == timesteps.dtype == torch.int32
    assert scores.shape == out_lens.shape == (batch, 7)
    assert scores.dtype == torch.float32 and out_lens.dtype == torch.int32
    positions = torch.arange(frames)[None, None, :]
    assert torch.all(results[positions.expand_as(results) >= out_lens[..., None]] == 0)  # padding: 0
    assert out_lens[2].tolist() == [0] * 7 and torch.all(torch.isinf(scores[2]))  # empty utterance: no beams
    live = scores[[0, 1, 3, 4]]
    assert torch.all(live[:, :-1] <= live[:, 1:])  # best (lowest negative log prob) first
    for b in (0, 1, 3, 4):
        for r in range(7):
            n = int(out_lens[b, r])
            steps = timesteps[b, r, :n]
            assert torch.all(steps[1:] > steps[:-1]) and (n == 0 or int(steps[-1]) < int(lengths[b]))
    default_lengths = CTCBeamDecoder(labels(41), beam_width=2, log_probs_input=True).decode(log_probs[:1])
    assert default_lengths[0].shape == (1, 2, frames)


def test_beam_scores_are_negative_log_probabilities_of_the_prefixes():
    """A beam's score counts the paths that stayed in the beam: at most the exact CTC probability of its label
    sequence, and equal to it once the beam is wide enough to keep every path (short utterances, beam 256)."""
    log_probs, lengths = synthetic_ctc_batch(6, 12, 20, 5, seed=3)
    for beam, tolerance in ((4, None), (256, 1e-4)):
        results, scores, _, out_lens = CTCBeamDecoder(labels(5), beam_width=beam, log_probs_input=True).decode(
            log_probs, lengths)
        best = [results[b, 0, : out_lens[b, 0]].tolist() for b in range(6)]
        exact = ctc_log_likelihood(log_probs, lengths, best)
        assert torch.all(-scores[:, 0].double() <= exact + 1e-4)
        if tolerance:
            assert (-scores[:, 0]).double().tolist() == pytest.approx(exact.tolist(), abs=tolerance)


@pytest.mark.parametrize(("arguments", "message"), [
    ({"model_path": "lm.arpa"}, "KenLM"),
    ({"blank_id": 41}, "blank_id=41"),
    ({"beam_width": 0}, "must be >= 1"),
])
def test_unsupported_or_bad_arguments_give_one_line(arguments, message):
    with pytest.raises(ValueError, match=message) as error:
        CTCBeamDecoder(labels(41), **arguments)
    assert "\n" not in str(error.value)


def test_bad_inputs_give_one_line():
    decoder = CTCBeamDecoder(labels(41), beam_width=4, log_probs_input=True)
    log_probs, lengths = synthetic_ctc_batch(2, 10, 20, 41, seed=0)
    with pytest.raises(ValueError, match="40 classes but labels has 41"):
        decoder.decode(log_probs[..., :40], lengths)
    with pytest.raises(ValueError, match="pass log_probs_input=False if they are probabilities"):
        decoder.decode(log_probs.exp(), lengths)  # probabilities passed with log_probs_input=True
    with pytest.raises(ValueError, match="pass log_probs_input=True if they are log-probs"):
        CTCBeamDecoder(labels(41), beam_width=4).decode(log_probs, lengths)


def test_half_precision_model_outputs_are_accepted():
    """fp16/bf16 log_softmax rows sum to 1 only within their precision (measured 1.3e-3 / 9.7e-3)."""
    log_probs, lengths = synthetic_ctc_batch(3, 10, 30, 41, seed=0)
    decoder = CTCBeamDecoder(labels(41), beam_width=4, log_probs_input=True, num_processes=1)
    full = decoder.decode(log_probs, lengths)[3]
    for dtype in (torch.float16, torch.bfloat16):
        assert decoder.decode(log_probs.to(dtype), lengths)[3].shape == full.shape


def test_changing_cutoff_top_n_between_calls_takes_effect():
    log_probs, lengths = synthetic_ctc_batch(4, 30, 60, 41, seed=4, hardness=2.0)
    decoder = CTCBeamDecoder(labels(41), beam_width=8, log_probs_input=True, num_processes=1)
    wide = decoder.decode(log_probs, lengths)
    decoder.cutoff_top_n = 1  # only the best class per frame: the answer is greedy's path
    narrow = decoder.decode(log_probs, lengths)
    assert int(torch.isfinite(narrow[1]).sum(dim=1).max()) == 1 and not torch.equal(wide[1], narrow[1])


# ---- the same answers as the real ctcdecode ----------------------------------------------------------------


def _ours(case: dict, log_probs: torch.Tensor, lengths: torch.Tensor):
    probs = log_probs if case["log_probs_input"] else log_probs.exp()
    return CTCBeamDecoder(labels(log_probs.shape[-1]), **case).decode(probs, lengths)


@pytest.mark.parametrize("case", REFERENCE["cases"], ids=lambda case: json.dumps(case["arguments"]))
def test_same_beams_as_recorded_ctcdecode(case):
    log_probs, lengths = reference_inputs()
    results, scores, _, out_lens = _ours(case["arguments"], log_probs, lengths)
    for b, expected in enumerate(case["utterances"]):
        live = len(expected["scores"])
        assert int(torch.isfinite(scores[b]).sum()) == live, f"utterance {b}: live beams"
        assert out_lens[b, :live].tolist() == expected["out_lens"]
        assert scores[b, :live].tolist() == pytest.approx(expected["scores"], abs=2e-4)
        for rank, tokens in enumerate(expected["tokens"]):
            assert results[b, rank, : out_lens[b, rank]].tolist() == tokens, f"utterance {b}, beam {rank}"


@pytest.mark.skipif(not HAVE_CTCDECODE, reason="the real ctcdecode is not built here "
                    "(../shared/tools/ctcdecode/build.sh); its recorded answers are checked above")
@pytest.mark.parametrize("arguments", [{"cutoff_top_n": 40}, {"cutoff_top_n": 41, "num_processes": 2},
                                       {"cutoff_top_n": 5, "log_probs_input": False}])
def test_same_beams_as_live_ctcdecode(arguments):
    from ctcdecode import CTCBeamDecoder as Real

    log_probs, lengths = synthetic_ctc_batch(32, 50, 300, 41, seed=11, hardness=2.0)
    arguments = {"beam_width": 16, "log_probs_input": True, **arguments}
    probs = log_probs if arguments["log_probs_input"] else log_probs.exp()
    ours = CTCBeamDecoder(labels(41), **arguments).decode(probs, lengths)
    theirs = Real(labels(41), **arguments).decode(probs, lengths)
    for b in range(32):
        live = int((theirs[1][b] < 1e30).sum())
        assert torch.equal(ours[3][b, :live], theirs[3][b, :live])
        for r in range(live):
            assert torch.equal(ours[0][b, r, : ours[3][b, r]], theirs[0][b, r, : theirs[3][b, r]])
        assert ours[1][b, :live].tolist() == pytest.approx(theirs[1][b, :live].tolist(), abs=2e-4)


# ---- exactness: the search equals a plain float64 search over all classes ---------------------------------


def test_equals_a_float64_reference_search_over_all_classes_on_peaky_outputs():
    """41 classes, beam 10: top answer and score of a textbook dict search on random peaky utterances."""
    log_probs, lengths = peaky_batch(12, 50, 41, seed=5)
    result = beam_search(log_probs.double(), lengths, beam=10, ranks=1)
    for b in range(12):
        expected, expected_score = reference_prefix_beam_search(log_probs[b, : lengths[b]], beam=10, blank=0)
        assert result.tokens[b][0] == expected
        assert float(result.scores[b, 0]) == pytest.approx(expected_score, abs=1e-9)


def test_cutoff_top_n_is_exactly_ctcdecode_pruning_and_never_helps():
    """With cutoff_top_n the search equals the reference search on ctcdecode-pruned frames; without it every
    answer is at least as probable (the pruning is a speed/quality trade, ctcdecode's default 40 of 41 included)."""
    log_probs, lengths = synthetic_ctc_batch(8, 40, 90, 41, seed=2, hardness=2.0)
    for top_n in (40, 6):
        pruned = beam_search(log_probs.double(), lengths, beam=8, ranks=1, cutoff_top_n=top_n)
        exact = beam_search(log_probs.double(), lengths, beam=8, ranks=1)
        pruned_inputs = prune_classes(log_probs.double(), top_n)
        for b in range(8):
            expected, _ = reference_prefix_beam_search(pruned_inputs[b, : lengths[b]], beam=8, blank=0)
            assert pruned.tokens[b][0] == expected
        gain = ctc_log_likelihood(log_probs, lengths, [h[0] for h in exact.tokens]) - ctc_log_likelihood(
            log_probs, lengths, [h[0] for h in pruned.tokens])
        assert torch.all(gain >= -1e-6)


def test_cutoff_prob_reproduces_ctcdecodes_log_domain_sum():
    """ctcdecode keeps classes until log(1 + Σp) >= cutoff_prob: with p = .5, .3, .15, .05 and cutoff .5, the
    threshold is Σp >= e^.5 - 1 = .649, so 2 classes are kept (not the 1 a plain Σp >= .5 would keep)."""
    frame = torch.tensor([[[0.5, 0.3, 0.15, 0.05]]]).log()
    kept = torch.isfinite(prune_classes(frame, None, 0.5)).sum().item()
    assert kept == 2
    assert torch.isfinite(prune_classes(frame, None, 0.99)).sum().item() == 4  # Σp never reaches e^.99 - 1
    assert torch.isfinite(prune_classes(frame, 3, 1.0)).sum().item() == 3
