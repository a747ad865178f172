"""ctcdecode's `CTCBeamDecoder`, on asrpipe's search: the hw3p2 starters' decoding code runs unchanged.

    # before:  from ctcdecode import CTCBeamDecoder
    from pipeline.decoding import CTCBeamDecoder
    decoder = CTCBeamDecoder(labels, beam_width=20, log_probs_input=True, num_processes=2, blank_id=0)
    beam_results, beam_scores, timesteps, out_lens = decoder.decode(log_probs, lengths)
    best = beam_results[0, 0, : out_lens[0, 0]]

Same constructor (arguments, defaults) and the same outputs as parlance/ctcdecode 1.0.2:
- beam_results (B, beam_width, T) int32: token ids, best beam first; timesteps (B, beam_width, T) int32: the frame
  where each token peaks (between its emission and the next token's); out_lens (B, beam_width) int32;
- beam_scores (B, beam_width) float32: ctcdecode's score, the *negative* log probability of the beam (lower is
  better);
- where ctcdecode leaves memory uninitialized (past out_lens; beams the search never filled) this fills 0, and
  beam_scores +inf for unfilled beams (their out_lens are 0 in both).
`cutoff_top_n` (default 40) and `cutoff_prob` prune each frame's classes exactly as ctcdecode does, so the same
arguments give the same top beams (tested against the real one). Unlike ctcdecode the search needs no pruning to be
fast: `cutoff_top_n=len(labels)` is exact and costs nothing extra (see ctc_beam.py). A KenLM `model_path` is not
supported: it raises one line naming asrpipe's own n-gram fusion (`decode.lm_order`, `decode.alpha`, `decode.beta`).
"""
from __future__ import annotations

import numpy as np
import torch

from pipeline.decoding.ctc_backends import check_decoder_inputs, make_decoder

_FLT_MIN = float(np.finfo(np.float32).tiny)  # ctcdecode takes log(p + FLT_MIN) of probability inputs


class CTCBeamDecoder:
    """Drop-in for `ctcdecode.CTCBeamDecoder` (see the module docstring for the outputs and what differs)."""

    def __init__(self, labels, model_path=None, alpha=0, beta=0, cutoff_top_n=40, cutoff_prob=1.0, beam_width=100,
                 num_processes=4, blank_id=0, log_probs_input=False):
        if model_path:
            raise ValueError(
                f"CTCBeamDecoder(model_path={model_path!r}): KenLM models are not supported; asrpipe fuses its own "
                "n-gram over the output symbols (recipe keys decode.lm_order, decode.alpha, decode.beta)")
        self._labels = list(labels)
        if len(self._labels) < 2:
            raise ValueError(f"CTCBeamDecoder: labels must list every output class incl. blank, got {len(self._labels)}")
        if not 0 <= blank_id < len(self._labels):
            raise ValueError(f"CTCBeamDecoder: blank_id={blank_id} is outside 0..{len(self._labels) - 1} (labels)")
        if int(beam_width) < 1 or int(cutoff_top_n) < 1 or int(num_processes) < 1:
            raise ValueError("CTCBeamDecoder: beam_width, cutoff_top_n and num_processes must be >= 1, got "
                             f"{beam_width}, {cutoff_top_n}, {num_processes}")
        self.cutoff_top_n = int(cutoff_top_n)
        self._cutoff_prob = float(cutoff_prob)
        self._beam_width = int(beam_width)
        self._num_processes = int(num_processes)
        self._blank_id = int(blank_id)
        self._log_probs = bool(log_probs_input)
        self._alpha, self._beta = alpha, beta
        self._search = None

    def decode(self, probs: torch.Tensor, seq_lens: torch.Tensor | None = None):
        """(beam_results, beam_scores, timesteps, out_lens) for probs (B, T, C); seq_lens (B,) default T."""
        probs = torch.as_tensor(probs).detach().cpu()
        given_dtype = probs.dtype
        probs = probs.float()
        if probs.ndim != 3:
            raise ValueError(f"CTCBeamDecoder.decode: probs must be (batch, frames, classes), got {tuple(probs.shape)}")
        batch, max_frames, num_classes = probs.shape
        if num_classes != len(self._labels):
            raise ValueError(f"CTCBeamDecoder.decode: probs have {num_classes} classes but labels has "
                             f"{len(self._labels)}")
        lengths = (torch.full((batch,), max_frames, dtype=torch.long) if seq_lens is None
                   else torch.as_tensor(seq_lens).cpu().long().clamp(max=max_frames))  # ctcdecode clamps too
        log_probs = probs if self._log_probs else (probs + _FLT_MIN).log()
        try:
            check_decoder_inputs(log_probs, lengths, num_classes, self._blank_id, given_dtype)
        except ValueError as exc:
            if "not log-softmax" not in str(exc):
                raise
            given = "log-probs" if self._log_probs else "probabilities"
            raise ValueError(f"CTCBeamDecoder.decode: probs are not {given} (log_probs_input={self._log_probs}): each "
                             f"frame should sum to 1 in probability; pass log_probs_input={not self._log_probs} if "
                             f"they are {'probabilities' if self._log_probs else 'log-probs'}") from None

        beam = self._beam_width
        output = torch.zeros((batch, beam, max_frames), dtype=torch.int32)
        timesteps = torch.zeros((batch, beam, max_frames), dtype=torch.int32)
        scores = torch.full((batch, beam), float("inf"), dtype=torch.float32)
        out_lens = torch.zeros((batch, beam), dtype=torch.int32)
        result = self._decoder(num_classes).search(log_probs, lengths, cutoff_prob=self._cutoff_prob, checked=True)
        for row, (tokens, frames, length) in enumerate(zip(result.tokens, result.frames, lengths.tolist())):
            if length == 0:  # ctcdecode returns no beam for an empty utterance
                continue
            row_log_probs = log_probs[row, :length].numpy()
            for rank, (hypothesis, emitted) in enumerate(zip(tokens, frames)):
                size = len(hypothesis)
                output[row, rank, :size] = torch.tensor(hypothesis, dtype=torch.int32)
                timesteps[row, rank, :size] = torch.from_numpy(peak_frames(row_log_probs, hypothesis, emitted))
                out_lens[row, rank] = size
                scores[row, rank] = -float(result.scores[row, rank])
        return output, scores, timesteps, out_lens

    def _decoder(self, num_classes: int):
        """Our search with a pool of `num_processes` workers (kept between calls, like ctcdecode's threads; rebuilt
        when cutoff_top_n is changed on the object, which ctcdecode reads at every call)."""
        if self._search is None or self._search.cutoff_top_n != self.cutoff_top_n:
            if self._search is not None:
                self._search.close()
            self._search = make_decoder("asrpipe", beam=self._beam_width, blank=self._blank_id,
                                        num_classes=num_classes, workers=self._num_processes,
                                        cutoff_top_n=self.cutoff_top_n)
        return self._search

    # ctcdecode's scorer accessors: no KenLM scorer here, so they answer as ctcdecode does without one.
    def character_based(self):
        return None

    def max_order(self):
        return None

    def dict_size(self):
        return None

    def reset_params(self, alpha, beta):
        self._alpha, self._beta = alpha, beta


def peak_frames(log_probs: np.ndarray, tokens: list[int], emitted: list[int]) -> np.ndarray:
    """For each token, the frame of its highest probability from its emission up to the next token's (int32)."""
    if not tokens:
        return np.zeros(0, np.int32)
    bounds = np.asarray(emitted + [len(log_probs)])
    span = np.diff(bounds)
    segment = np.repeat(np.arange(len(tokens)), span)
    frames = np.arange(bounds[0], bounds[-1])
    values = log_probs[frames, np.asarray(tokens)[segment]]
    order = np.lexsort((-values, segment))  # per segment, the most probable frame first (earliest on ties)
    firsts = np.r_[0, np.cumsum(span)[:-1]]
    return frames[order[firsts]].astype(np.int32)
