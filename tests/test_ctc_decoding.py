"""CTC decoders and metrics.

    .venv/bin/python -m pytest tests/test_ctc_decoding.py -q
"""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from pipeline.decoding.ctc import (
    available_backends,
    ctc_log_likelihood,
    greedy_decode,
    make_decoder,
    prefix_beam_search,
    prefix_beam_search_nbest,
)
from pipeline.decoding.ctc_synthetic import synthetic_ctc_batch
from pipeline.decoding.metrics import cer, levenshtein_mean

A, B_, C_ = 1, 2, 3  # token ids; blank is 0


def one_hot_log_probs(frames: list[int], num_classes: int = 4, peak: float = 0.97) -> torch.Tensor:
    """(1, T, C) log-probs where each frame puts `peak` on the given class."""
    probs = torch.full((len(frames), num_classes), (1 - peak) / (num_classes - 1))
    probs[torch.arange(len(frames)), torch.tensor(frames)] = peak
    return probs.log()[None]


def peaky_batch(batch: int, frames: int, num_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random utterances whose every frame gives >= 0.9 to one class (where greedy is optimal per frame)."""
    g = torch.Generator().manual_seed(seed)
    best = torch.randint(0, num_classes, (batch, frames), generator=g)
    logits = torch.randn(batch, frames, num_classes, generator=g)
    logits.scatter_(2, best[..., None], 8.0 + math.log(num_classes))
    lengths = torch.randint(frames // 2, frames + 1, (batch,), generator=g)
    return logits.log_softmax(-1), lengths


def all_labellings(max_length: int, tokens: list[int]) -> list[list[int]]:
    return [list(seq) for n in range(max_length + 1) for seq in itertools.product(tokens, repeat=n)]


def reference_prefix_beam_search(log_probs: torch.Tensor, beam: int, blank: int, bonus=None) -> tuple[list[int], float]:
    """Textbook dict-based prefix beam search (ctcdecode's ranking), all tokens, one utterance (T, C); `bonus(prefix,
    c)` is added to every extension of `prefix` by c (an LM's alpha * log P + beta)."""
    x = log_probs.double().tolist()

    def add(a: float, b: float) -> float:
        return b if a == -math.inf else a if b == -math.inf else max(a, b) + math.log1p(math.exp(-abs(a - b)))

    beams = {(): (0.0, -math.inf)}
    for frame in x:
        new: dict[tuple, tuple[float, float]] = {}

        def accumulate(prefix, p_b, p_nb):
            old_b, old_nb = new.get(prefix, (-math.inf, -math.inf))
            new[prefix] = (add(old_b, p_b), add(old_nb, p_nb))

        for prefix, (p_b, p_nb) in beams.items():
            total = add(p_b, p_nb)
            accumulate(prefix, total + frame[blank], p_nb + frame[prefix[-1]] if prefix else -math.inf)
            for c in range(len(frame)):
                if c != blank:
                    source = p_b if prefix and prefix[-1] == c else total
                    accumulate(prefix + (c,), -math.inf, source + frame[c] + (bonus(prefix, c) if bonus else 0.0))
        beams = dict(sorted(new.items(), key=lambda kv: -add(*kv[1]))[:beam])
    best, (p_b, p_nb) = max(beams.items(), key=lambda kv: add(*kv[1]))
    return list(best), add(p_b, p_nb)


# ---- greedy and exact scoring ------------------------------------------------------------------------------


def test_greedy_collapses_repeats_and_drops_blanks():
    log_probs = one_hot_log_probs([A, A, 0, A, B_, B_, 0, 0, C_])
    assert greedy_decode(log_probs, torch.tensor([9])) == [[A, A, B_, C_]]
    assert greedy_decode(log_probs, torch.tensor([6])) == [[A, A, B_]]  # frames past the length are ignored
    assert greedy_decode(log_probs, torch.tensor([0])) == [[]]


def test_greedy_honours_a_nonzero_blank():
    log_probs = one_hot_log_probs([1, 1, 3, 1, 2], num_classes=4)
    assert greedy_decode(log_probs, torch.tensor([5]), blank=3) == [[1, 1, 2]]


def test_ctc_log_likelihood_matches_hand_computation():
    probs = torch.tensor([[0.6, 0.4], [0.6, 0.4]])  # classes: blank, a
    log_probs, lengths = probs.log()[None], torch.tensor([2])
    empty = ctc_log_likelihood(log_probs, lengths, [[]])
    single = ctc_log_likelihood(log_probs, lengths, [[1]])
    double = ctc_log_likelihood(log_probs, lengths, [[1, 1]])
    assert empty.item() == pytest.approx(math.log(0.36))
    assert single.item() == pytest.approx(math.log(0.16 + 0.24 + 0.24))  # aa, a-, -a
    assert double.item() == -math.inf  # "a a" needs a blank between: 3 frames


# ---- beam search -----------------------------------------------------------------------------------------


def test_beam_finds_the_label_that_greedy_misses():
    # Blank wins each frame (0.6), but "a" has 0.64 summed over its three paths against 0.36 for "".
    log_probs = torch.tensor([[0.6, 0.4], [0.6, 0.4]]).log()[None]
    lengths = torch.tensor([2])
    assert greedy_decode(log_probs, lengths) == [[]]
    hypotheses, scores = prefix_beam_search(log_probs, lengths, beam=4)
    assert hypotheses == [[1]]
    assert scores.item() == pytest.approx(math.log(0.64), abs=1e-6)


def test_beam_of_one_equals_greedy_on_peaky_utterances():
    log_probs, lengths = peaky_batch(batch=16, frames=60, num_classes=6, seed=1)
    assert prefix_beam_search(log_probs, lengths, beam=1)[0] == greedy_decode(log_probs, lengths)


@pytest.mark.parametrize("blank", [0, 2])
def test_wide_beam_finds_the_most_probable_labelling(blank):
    """Against brute force over every labelling of tiny inputs (T <= 6, 2 tokens + blank)."""
    g = torch.Generator().manual_seed(7 + blank)
    exact_hits, narrow_hits, trials = 0, 0, 120
    for _ in range(trials):
        frames = int(torch.randint(1, 7, (1,), generator=g))
        log_probs = (1.5 * torch.randn(1, frames, 3, generator=g)).log_softmax(-1)
        lengths = torch.tensor([frames])
        labellings = all_labellings(frames, [c for c in range(3) if c != blank])
        scores = ctc_log_likelihood(
            log_probs.expand(len(labellings), -1, -1), lengths.expand(len(labellings)), labellings, blank
        )
        best = scores.max().item()
        wide, wide_score = prefix_beam_search(log_probs, lengths, beam=128, blank=blank)  # >= all prefixes
        narrow, _ = prefix_beam_search(log_probs, lengths, beam=4, blank=blank)
        found = ctc_log_likelihood(log_probs, lengths, wide, blank).item()
        exact_hits += found >= best - 1e-9
        narrow_hits += ctc_log_likelihood(log_probs, lengths, narrow, blank).item() >= best - 1e-9
        # With nothing pruned, the beam score is the exact probability.
        assert wide_score.item() == pytest.approx(found, abs=1e-5)
    assert exact_hits == trials
    assert narrow_hits >= 0.95 * trials


def test_matches_a_textbook_implementation():
    """Same answers and scores as a plain dict-based prefix beam search (so the merges and pruning are right)."""
    g = torch.Generator().manual_seed(3)
    for trial in range(12):
        frames, classes, beam = 12 + trial, 5, 2 + trial % 5
        log_probs = (2.0 * torch.randn(1, frames, classes, generator=g)).log_softmax(-1)
        blank = trial % classes
        expected, expected_score = reference_prefix_beam_search(log_probs[0], beam, blank)
        hypotheses, scores = prefix_beam_search(log_probs.double(), torch.tensor([frames]), beam=beam, blank=blank)
        assert hypotheses[0] == expected
        assert scores.item() == pytest.approx(expected_score, abs=1e-9)


def test_final_beam_holds_distinct_prefixes():
    """Equal prefixes reached by different routes are merged, never kept twice."""
    log_probs, lengths = synthetic_ctc_batch(8, 100, 300, 41, seed=5, hardness=2.0)
    nbest, scores = prefix_beam_search_nbest(log_probs, lengths, beam=16)
    for hypotheses in nbest:
        assert len({tuple(h) for h in hypotheses}) == len(hypotheses) == 16
    assert torch.all(scores[:, :-1] >= scores[:, 1:])  # best first


def test_padding_and_batch_mates_do_not_change_an_utterance():
    log_probs, lengths = synthetic_ctc_batch(6, 50, 200, 41, seed=2)
    garbage = torch.randn(log_probs.shape).log_softmax(-1)
    padded = torch.where(torch.arange(log_probs.shape[1])[None, :, None] < lengths[:, None, None], log_probs, garbage)
    together, scores = prefix_beam_search(padded, lengths, beam=8)
    for b in range(6):
        alone, score = prefix_beam_search(log_probs[b : b + 1, : lengths[b]], lengths[b : b + 1], beam=8)
        assert together[b] == alone[0]
        assert scores[b].item() == pytest.approx(score.item(), abs=1e-4)


def test_search_quality_on_synthetic_ctc_outputs():
    """Beam 20 on 30 CTC-like utterances (100-400 frames): exact log p of each answer, per utterance."""
    log_probs, lengths = synthetic_ctc_batch(30, 100, 400, 41, seed=0)
    greedy_score = ctc_log_likelihood(log_probs, lengths, greedy_decode(log_probs, lengths))
    ours = ctc_log_likelihood(log_probs, lengths, make_decoder("asrpipe", 20).decode(log_probs, lengths))
    assert torch.all(ours >= greedy_score - 1e-6), "beam answer less probable than greedy's"
    assert float((ours - greedy_score).mean()) > 1.0  # the data has frames where greedy is wrong
    for backend in set(available_backends()) - {"greedy", "asrpipe"}:
        theirs = ctc_log_likelihood(log_probs, lengths, make_decoder(backend, 20).decode(log_probs, lengths))
        at_least_as_good = float((ours >= theirs - 1e-6).float().mean())
        assert at_least_as_good >= 0.9, f"{backend}: ours at least as probable on only {at_least_as_good:.0%}"
        # Measured: on this data the two searches are about even on average (see tools/bench_decode.py).
        assert float((ours - theirs).mean()) > -0.1, backend


@pytest.mark.xfail(
    strict=True,
    reason="measured: on these synthetic outputs ctc-beam-decoder's (pyctcdecode's) search is on average "
    "slightly MORE probable at beam 20 (+2.86 vs +2.84 nats over greedy); the expected win of ranking by "
    "p_blank+p_nonblank does not show here. Remove the xfail if the search or the data change.",
)
def test_on_average_more_probable_than_ctc_beam_decoder():
    if "ctc-beam-decoder" not in available_backends():
        pytest.skip("ctc-beam-decoder not installed")
    log_probs, lengths = synthetic_ctc_batch(30, 100, 400, 41, seed=0)
    ours = ctc_log_likelihood(log_probs, lengths, make_decoder("asrpipe", 20).decode(log_probs, lengths))
    theirs = ctc_log_likelihood(log_probs, lengths, make_decoder("ctc-beam-decoder", 20).decode(log_probs, lengths))
    assert float(ours.mean()) > float(theirs.mean())


# ---- the decoder interface ---------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", [b for b in ("greedy", "asrpipe", "ctc-beam-decoder") if b in available_backends()])
def test_two_workers_give_the_same_answers_as_one(backend):
    log_probs, lengths = synthetic_ctc_batch(9, 40, 160, 41, seed=4)
    one = make_decoder(backend, beam=8, num_classes=41, workers=1)
    two = make_decoder(backend, beam=8, num_classes=41, workers=2)
    try:
        assert two.decode(log_probs, lengths) == one.decode(log_probs, lengths)
    finally:
        two.close()


def test_whole_batches_spread_over_workers_give_the_same_answers():
    batches = [synthetic_ctc_batch(5, 30, 90, 41, seed=seed) for seed in range(5)]
    one = make_decoder("asrpipe", beam=6, num_classes=41)
    two = make_decoder("asrpipe", beam=6, num_classes=41, workers=2)
    try:
        assert list(two.decode_batches(batches)) == [one.decode(*batch) for batch in batches]
        spread = list(two.search_batches(batches))
        alone = [one.search(*batch) for batch in batches]
        assert [r.tokens for r in spread] == [r.tokens for r in alone]
        assert all(torch.equal(a.scores, b.scores) for a, b in zip(spread, alone))
    finally:
        two.close()


def test_workers_get_runs_of_similar_length_with_even_costs():
    """Lengths 200-1600: the longest utterances' worker gets fewer of them (each search step costs
    FRAME_COST_IN_ROWS utterance-frames whatever the batch), costs come out even and below round-robin's, and
    every index is dealt exactly once."""
    from pipeline.decoding.ctc_backends import FRAME_COST_IN_ROWS, split_for_workers

    lengths = torch.randint(200, 1601, (256,), generator=torch.Generator().manual_seed(0))
    chunks = split_for_workers(lengths, 2)
    assert sorted(torch.cat(chunks).tolist()) == list(range(len(lengths)))
    costs = [FRAME_COST_IN_ROWS * int(lengths[c].max()) + int(lengths[c].sum()) for c in chunks]
    assert int(lengths.argmax()) in chunks[0].tolist() and len(chunks[0]) < len(chunks[1])
    assert max(costs) / min(costs) < 1.1
    round_robin = FRAME_COST_IN_ROWS * int(lengths.max()) + int(lengths.sum()) // 2
    assert max(costs) < 0.95 * round_robin
    assert split_for_workers(torch.tensor([5]), 4) == [torch.tensor([0])]


def test_cuda_backend_without_cuda_or_torchaudio_is_one_line():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    with pytest.raises(ValueError, match="'cuda-ctc' (is not installed|runs on CUDA only)") as error:
        make_decoder("cuda-ctc", beam=4)
    assert "\n" not in str(error.value)


def test_backends_agree_on_an_easy_utterance():
    log_probs = one_hot_log_probs([A, A, 0, A, B_, B_, 0, 0, C_])
    for backend in available_backends():
        assert make_decoder(backend, beam=4, num_classes=4).decode(log_probs, torch.tensor([9])) == [[A, A, B_, C_]]


def test_make_decoder_rejects_unknown_backend_with_the_choices():
    with pytest.raises(ValueError, match="unknown CTC decoder backend 'beamz'; available: greedy, asrpipe"):
        make_decoder("beamz", beam=4)


def test_missing_optional_backend_says_how_to_install(monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "ctcdecode" else real_find_spec(name))
    with pytest.raises(ValueError, match="'ctcdecode' is not installed .*build from source"):
        make_decoder("ctcdecode", beam=4)


def test_make_decoder_rejects_blank_outside_the_vocabulary():
    with pytest.raises(ValueError, match="blank index 41 is outside 0..40"):
        make_decoder("asrpipe", beam=4, blank=41, num_classes=41)


def test_decode_rejects_a_vocabulary_mismatch():
    decoder = make_decoder("asrpipe", beam=4, num_classes=42)
    with pytest.raises(ValueError, match="41 classes but the decoder was built for 42"):
        decoder.decode(*synthetic_ctc_batch(2, 10, 20, 41))


@pytest.mark.parametrize(
    "transform, hint",
    [(lambda lp: lp.exp(), "probabilities: pass .log"), (lambda lp: 3 * lp + 1, "apply torch.log_softmax")],
)
def test_decode_rejects_inputs_that_are_not_log_probs(transform, hint):
    log_probs, lengths = synthetic_ctc_batch(2, 10, 20, 41)
    decoder = make_decoder("greedy", beam=1)
    with pytest.raises(ValueError, match=f"not log-softmax outputs.*{hint}"):
        decoder.decode(transform(log_probs), lengths)


def test_padding_frames_are_not_checked():
    log_probs, _ = synthetic_ctc_batch(2, 20, 20, 41)
    log_probs[:, 10:] = 0.0  # zero padding is not log-softmax, but lies past the lengths
    assert len(make_decoder("asrpipe", beam=4).decode(log_probs, torch.tensor([10, 10]))) == 2


# ---- metrics -----------------------------------------------------------------------------------------------


def test_levenshtein_mean():
    assert levenshtein_mean(["abc", "hello"], ["abd", "hello"]) == 0.5
    assert levenshtein_mean([], []) == 0.0
    with pytest.raises(ValueError):
        levenshtein_mean(["a"], [])


def test_cer_is_total_edits_over_total_reference_characters():
    assert cer(["abcd", "ef"], ["abxd", ""]) == pytest.approx(100 * 3 / 6)
