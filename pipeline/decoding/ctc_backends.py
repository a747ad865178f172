"""CTC decoder backends behind one interface, input checks, and utterance-parallel workers.

    decoder = make_decoder("asrpipe", beam=20, blank=0, num_classes=41, workers=2)
    hypotheses = decoder.decode(log_probs, lengths)   # (B, T, C) log-softmax, (B,) -> list of token lists

Backends: "greedy" and "asrpipe" (our prefix beam search, ctc_beam.py; on CUDA when the log-probs are) always;
"ctc-beam-decoder" (`pip install ctc-beam-decoder`, a C++ port of pyctcdecode), "ctcdecode" (parlance/ctcdecode,
source build only) and "cuda-ctc" (torchaudio's cuda_ctc_decoder, with CUDA) when importable. Every backend sees
the same checked log-probs.
"""
from __future__ import annotations

import importlib.util
import multiprocessing
from collections.abc import Iterator
from typing import Protocol

import numpy as np
import torch

from pipeline.decoding.ctc_beam import NEG_INF, BeamResult, beam_search
from pipeline.decoding.ctc_greedy import greedy_decode

DEFAULT_CUTOFF_TOP_N = None  # our search never needs more than beam+1 tokens per frame (exact; see ctc_beam.py)
CTCDECODE_CUTOFF_TOP_N = 40  # ctcdecode's default
LOG_PROB_TOLERANCE = 1e-3  # |logsumexp(row)| allowed for float32 log_softmax outputs

_OPTIONAL_BACKENDS = {
    # backend -> (importable module, install hint)
    "ctc-beam-decoder": ("ctc_beam_decoder", "pip install ctc-beam-decoder  (or: pip install -e '.[decoders]')"),
    "ctcdecode": ("ctcdecode", "build from source: https://github.com/parlance/ctcdecode (needs network + g++); "
                               "its API on our search: from pipeline.decoding import CTCBeamDecoder"),
    "cuda-ctc": ("torchaudio", "pip install torchaudio matching your torch (its cuda_ctc_decoder); CUDA only"),
}
CUDA_BACKENDS = ("cuda-ctc",)
# Never handed to worker processes: greedy is one argmax, ctcdecode runs its own threads, CUDA runs the batch at once.
IN_PROCESS_BACKENDS = ("greedy", "ctcdecode", *CUDA_BACKENDS)


class CTCDecoder(Protocol):
    name: str

    def decode(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]: ...


def available_backends() -> list[str]:
    optional = [name for name, (module, _) in _OPTIONAL_BACKENDS.items()
                if importlib.util.find_spec(module) and (name not in CUDA_BACKENDS or torch.cuda.is_available())]
    return ["greedy", "asrpipe", *optional]


def check_decoder_inputs(log_probs: torch.Tensor, lengths: torch.Tensor, num_classes: int, blank: int,
                         given_dtype: torch.dtype | None = None) -> None:
    """Shape, vocabulary size, blank index and log-softmax-ness of a batch, with errors that say the fix; the
    tolerance follows the precision the model produced (`given_dtype`, default log_probs' own)."""
    if log_probs.ndim != 3:
        raise ValueError(f"log_probs must be (batch, frames, classes), got shape {tuple(log_probs.shape)}")
    if log_probs.shape[-1] != num_classes:
        raise ValueError(
            f"log_probs have {log_probs.shape[-1]} classes but the decoder was built for {num_classes} "
            "(vocabulary including blank); check the task's label map"
        )
    if not 0 <= blank < num_classes:
        raise ValueError(f"blank index {blank} is outside 0..{num_classes - 1}")
    if lengths.shape != (log_probs.shape[0],):
        raise ValueError(f"lengths must be ({log_probs.shape[0]},), got {tuple(lengths.shape)}")
    if lengths.numel() and (int(lengths.min()) < 0 or int(lengths.max()) > log_probs.shape[1]):
        raise ValueError(f"lengths must lie in 0..{log_probs.shape[1]} (frames in log_probs)")
    valid = torch.arange(log_probs.shape[1], device=log_probs.device)[None, :] < lengths.to(log_probs.device)[:, None]
    if not bool(valid.any()):
        return
    row_sums = torch.logsumexp(log_probs.float(), dim=-1)[valid]
    worst = float(row_sums.abs().max())
    given_dtype = given_dtype or log_probs.dtype
    precision = torch.finfo(given_dtype).eps if given_dtype.is_floating_point else 0.0
    if not worst <= max(LOG_PROB_TOLERANCE, 16 * precision):  # half precision rounds more; also catches NaN
        hint = "they look like probabilities: pass .log()" if bool((log_probs[valid] >= 0).all()) else (
            "apply torch.log_softmax(logits, dim=-1) first"
        )
        raise ValueError(
            f"log_probs are not log-softmax outputs: logsumexp over classes reaches {worst:.3g} (should be 0); {hint}"
        )


def _resolve_backend(backend: str) -> None:
    if backend in ("greedy", "asrpipe"):
        return
    available = ", ".join(available_backends())
    if backend not in _OPTIONAL_BACKENDS:
        raise ValueError(f"unknown CTC decoder backend {backend!r}; available: {available}")
    module, install = _OPTIONAL_BACKENDS[backend]
    if importlib.util.find_spec(module) is None:
        raise ValueError(f"CTC decoder backend {backend!r} is not installed ({install}); available: {available}")
    if backend in CUDA_BACKENDS and not torch.cuda.is_available():
        raise ValueError(f"CTC decoder backend {backend!r} runs on CUDA only and no CUDA device is visible; "
                         f"available: {available}")


def _token_labels(num_classes: int, blank: int) -> list[str]:
    """One distinct non-space character per class ("" for blank), for decoders that work on strings."""
    return ["" if c == blank else chr(0x4E00 + c) for c in range(num_classes)]


def _tokens_from_text(text: str) -> list[int]:
    return [ord(character) - 0x4E00 for character in text]


# ---- backends that decode one chunk of utterances in-process -------------------------------------------


class _GreedyChunks:
    def __init__(self, blank: int):
        self.blank = blank

    def __call__(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
        return greedy_decode(log_probs, lengths, self.blank)


class _PrefixBeamChunks:
    def __init__(self, beam: int, blank: int, cutoff_top_n: int | None, lm=None, alpha: float = 0.0,
                 beta: float = 0.0):
        self.beam, self.blank, self.cutoff_top_n = beam, blank, cutoff_top_n
        self.lm, self.alpha, self.beta = lm, alpha, beta

    def __call__(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
        result = self.search(log_probs, lengths, ranks=1)
        return [hypotheses[0] for hypotheses in result.tokens]

    def search(self, log_probs: torch.Tensor, lengths: torch.Tensor, ranks: int | None = None,
               cutoff_prob: float = 1.0) -> BeamResult:
        return beam_search(log_probs, lengths, self.beam, self.blank, ranks, self.cutoff_top_n, cutoff_prob,
                           self.lm, self.alpha, self.beta)


class _CtcBeamDecoderChunks:
    """ctc-beam-decoder with its own defaults (token_min_logp=-5, beam_prune_logp=-10), one utterance at a time."""

    def __init__(self, beam: int, blank: int, num_classes: int):
        import ctc_beam_decoder

        self.beam = beam
        self.decoder = ctc_beam_decoder.BeamSearchDecoder(_token_labels(num_classes, blank))

    def __call__(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
        frames = log_probs.detach().float().cpu().numpy()
        hypotheses = []
        for utterance, length in zip(frames, lengths.tolist()):
            beams = self.decoder.decode_beams(np.ascontiguousarray(utterance[:length]), beam_width=self.beam)
            hypotheses.append(_tokens_from_text(beams[0][0]) if beams else [])
        return hypotheses


class _CtcdecodeChunks:
    """parlance/ctcdecode (not installable here, so untested in CI); its own processes do the parallelism."""

    def __init__(self, beam: int, blank: int, num_classes: int, cutoff_top_n: int | None, workers: int):
        from ctcdecode import CTCBeamDecoder

        labels = [chr(0x4E00 + c) for c in range(num_classes)]  # ctcdecode wants a label for blank too
        self.decoder = CTCBeamDecoder(
            labels,
            beam_width=beam,
            blank_id=blank,
            cutoff_top_n=min(cutoff_top_n or CTCDECODE_CUTOFF_TOP_N, num_classes),
            num_processes=workers,
            log_probs_input=True,
        )

    def __call__(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
        results, _, _, result_lengths = self.decoder.decode(log_probs.detach().float().cpu(), lengths.cpu().int())
        return [results[b, 0, : result_lengths[b, 0]].tolist() for b in range(results.shape[0])]


class _CudaCtcChunks:
    """torchaudio's cuda_ctc_decoder (blank must be 0; frames whose blank probability exceeds its
    blank_skip_threshold 0.95 are skipped, its speed trade; torchaudio caps the beam at the number of classes).
    Inputs go to the GPU, answers come back as lists."""

    def __init__(self, beam: int, blank: int, num_classes: int):
        if blank != 0:
            raise ValueError(f"torchaudio's cuda_ctc_decoder needs blank index 0, got {blank}")
        from torchaudio.models.decoder import cuda_ctc_decoder

        self.decoder = cuda_ctc_decoder([chr(0x4E00 + c) for c in range(num_classes)], nbest=1, beam_size=beam)

    def __call__(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
        device = log_probs.device if log_probs.is_cuda else torch.device("cuda")
        results = self.decoder(log_probs.detach().to(device, torch.float32).contiguous(),
                               lengths.to(device, torch.int32))
        return [list(hypotheses[0].tokens) if hypotheses else [] for hypotheses in results]


def _chunk_decoder(backend: str, beam: int, blank: int, num_classes: int, cutoff_top_n: int | None, fusion: tuple,
                   workers: int):
    if backend == "greedy":
        return _GreedyChunks(blank)
    if backend == "asrpipe":
        return _PrefixBeamChunks(beam, blank, cutoff_top_n, *fusion)
    if backend == "ctc-beam-decoder":
        return _CtcBeamDecoderChunks(beam, blank, num_classes)
    if backend == "cuda-ctc":
        return _CudaCtcChunks(beam, blank, num_classes)
    return _CtcdecodeChunks(beam, blank, num_classes, cutoff_top_n, workers)


# ---- utterance-parallel workers -------------------------------------------------------------------------

# Measured (2026-12, one core): a search step costs ~0.65 ms whatever the batch, plus ~0.008 ms per utterance in it,
# so a chunk costs about FRAME_COST_IN_ROWS x its longest utterance + its total frames (in utterance-frames).
FRAME_COST_IN_ROWS = 80

_worker_decoder = None


def _init_worker(spec: tuple) -> None:
    global _worker_decoder
    torch.set_num_threads(1)
    _worker_decoder = _chunk_decoder(*spec, 1)


def _decode_in_worker(chunk: tuple) -> list[list[int]]:
    log_probs, lengths = chunk
    return _worker_decoder(torch.from_numpy(log_probs), torch.from_numpy(lengths))


def _search_in_worker(chunk: tuple) -> tuple:
    log_probs, lengths, ranks, cutoff_prob = chunk
    result = _worker_decoder.search(torch.from_numpy(log_probs), torch.from_numpy(lengths), ranks, cutoff_prob)
    return result.tokens, result.frames, result.scores


def split_for_workers(lengths: torch.Tensor, workers: int) -> list[torch.Tensor]:
    """Utterance indices per worker: runs of the length-sorted utterances whose costs (FRAME_COST_IN_ROWS x the
    longest + the total frames) are as even as possible, so every worker is busy to the end. Round-robin
    chunks would each pay the per-step cost for the longest utterance."""
    order = torch.argsort(lengths.cpu(), descending=True, stable=True)
    sorted_lengths = lengths.cpu()[order].tolist()

    def cut(limit: int) -> list[int]:
        starts, total = [0], FRAME_COST_IN_ROWS * sorted_lengths[0]
        for i, length in enumerate(sorted_lengths):
            if i > starts[-1] and total + length > limit:
                starts.append(i)
                total = FRAME_COST_IN_ROWS * length
            total += length
        return starts

    if not sorted_lengths:
        return []
    low, high = 0, FRAME_COST_IN_ROWS * sorted_lengths[0] + sum(sorted_lengths)  # high: one chunk fits
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if len(cut(middle)) <= workers else (middle, high)
    bounds = [*cut(high), len(order)]
    return [order[start:end] for start, end in zip(bounds, bounds[1:])]


def _merge(indices_per_chunk: list[torch.Tensor], parts: list[tuple], total: int) -> BeamResult:
    tokens: list = [None] * total
    frames: list = [None] * total
    scores = None
    for indices, (chunk_tokens, chunk_frames, chunk_scores) in zip(indices_per_chunk, parts):
        if scores is None:
            scores = chunk_scores.new_full((total, chunk_scores.shape[1]), NEG_INF)
        scores[indices] = chunk_scores
        for index, hypotheses, emitted in zip(indices.tolist(), chunk_tokens, chunk_frames):
            tokens[index], frames[index] = hypotheses, emitted
    return BeamResult(tokens, frames, scores)


class Decoder:
    """A backend plus the input checks and (on CPU) a process pool over utterances."""

    def __init__(
        self, backend: str, beam: int, blank: int, num_classes: int | None, workers: int, cutoff_top_n: int | None,
        fusion: tuple = (),
    ):
        self.name = backend
        self.beam, self.blank, self.num_classes = beam, blank, num_classes
        self.workers, self.cutoff_top_n = workers, cutoff_top_n
        self.fusion = fusion  # (NgramLM, alpha, beta) or ()
        self._in_process = None
        self._pool = None

    def decode(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
        """The best label sequence per utterance."""
        if self.name == "asrpipe":
            return [hypotheses[0] for hypotheses in self.search(log_probs, lengths, ranks=1).tokens]
        self._check(log_probs, lengths)
        if log_probs.shape[0] == 0:
            return []
        if self.workers <= 1 or self.name in IN_PROCESS_BACKENDS or log_probs.is_cuda:
            return self._decoder()(log_probs, lengths)
        chunks = split_for_workers(lengths, self.workers)
        hypotheses: list[list[int]] = [[] for _ in range(len(lengths))]
        for indices, chunk_hypotheses in zip(chunks, self._map(_decode_in_worker, log_probs, lengths, chunks, ())):
            for index, hypothesis in zip(indices.tolist(), chunk_hypotheses):
                hypotheses[index] = hypothesis
        return hypotheses

    def search(self, log_probs: torch.Tensor, lengths: torch.Tensor, ranks: int | None = None,
               cutoff_prob: float = 1.0, checked: bool = False) -> BeamResult:
        """Our search's final beams (tokens, emission frames, scores); the asrpipe backend only. `checked`: the
        caller already ran check_decoder_inputs (with the precision its model produced)."""
        if self.name != "asrpipe":
            raise ValueError(f"the {self.name!r} backend returns best paths only; final beams need 'asrpipe'")
        if not checked:
            self._check(log_probs, lengths)
        if log_probs.shape[0] == 0 or self.workers <= 1 or log_probs.is_cuda:
            if log_probs.is_cuda:
                return self._decoder().search(log_probs, lengths, ranks, cutoff_prob)
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # small ops: 2 threads took 2.9 s vs 2.7 s on 256 utterances (idle, 2026-12)
            try:
                return self._decoder().search(log_probs, lengths, ranks, cutoff_prob)
            finally:
                torch.set_num_threads(threads)
        chunks = split_for_workers(lengths, self.workers)
        parts = self._map(_search_in_worker, log_probs, lengths, chunks, (ranks, cutoff_prob))
        return _merge(chunks, parts, len(lengths))

    def decode_batches(self, batches) -> "Iterator[list[list[int]]]":
        """decode() of each (log_probs, lengths) batch, in order. With workers on CPU whole batches go to different
        workers (each pays the per-step cost once), not each batch split among them."""
        return self._over_batches(batches, _decode_in_worker, (), self.decode, lambda answers: answers)

    def search_batches(self, batches, ranks: int | None = None) -> "Iterator[BeamResult]":
        """search() of each batch, in order, spread over the workers like decode_batches."""
        if self.name != "asrpipe":
            raise ValueError(f"the {self.name!r} backend returns best paths only; final beams need 'asrpipe'")
        return self._over_batches(batches, _search_in_worker, (ranks, 1.0), lambda p, l: self.search(p, l, ranks),
                                  lambda part: BeamResult(*part))

    def _over_batches(self, batches, worker_function, extra: tuple, here, wrap):
        if self.workers <= 1 or self.name in IN_PROCESS_BACKENDS:
            return (here(log_probs, lengths) for log_probs, lengths in batches)  # one batch in memory at a time
        batches = list(batches)
        if len(batches) < self.workers or any(log_probs.is_cuda for log_probs, _ in batches):
            return (here(log_probs, lengths) for log_probs, lengths in batches)
        for log_probs, lengths in batches:
            self._check(log_probs, lengths)
        payloads = [(log_probs.detach().float().numpy(), lengths.long().numpy(), *extra) for log_probs, lengths in batches]
        return (wrap(part) for part in self._get_pool().imap(worker_function, payloads))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool = None

    def __del__(self) -> None:
        self.close()

    def _check(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> None:
        if self.num_classes is None:
            self.num_classes = log_probs.shape[-1]
        check_decoder_inputs(log_probs, lengths, self.num_classes, self.blank)

    def _spec(self) -> tuple:
        return (self.name, self.beam, self.blank, self.num_classes, self.cutoff_top_n, self.fusion)

    def _decoder(self):
        if self._in_process is None:
            self._in_process = _chunk_decoder(*self._spec(), self.workers)
        return self._in_process

    def _get_pool(self):
        if self._pool is None:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            self._pool = context.Pool(self.workers, initializer=_init_worker, initargs=(self._spec(),))
        return self._pool

    def _map(self, function, log_probs: torch.Tensor, lengths: torch.Tensor, chunks: list, extra: tuple) -> list:
        self._get_pool()
        log_probs, lengths = log_probs.detach().cpu(), lengths.cpu().long()
        payloads = []
        for indices in chunks:
            chunk_lengths = lengths[indices]
            longest = int(chunk_lengths.max())
            payloads.append((log_probs[indices, :longest].float().numpy(), chunk_lengths.numpy(), *extra))
        return self._pool.map(function, payloads, chunksize=1)


def make_decoder(
    backend: str,
    beam: int,
    blank: int = 0,
    num_classes: int | None = None,
    workers: int = 1,
    cutoff_top_n: int | None = DEFAULT_CUTOFF_TOP_N,
    lm=None,
    alpha: float = 0.0,
    beta: float = 0.0,
) -> Decoder:
    """A CTC decoder; raises ValueError for an unknown or missing backend or a bad blank/vocabulary/beam. `lm` (an
    ngram.NgramLM, asrpipe backend only) is fused into the search with weight alpha and a length bonus beta."""
    _resolve_backend(backend)
    if lm is not None and backend != "asrpipe":
        raise ValueError(f"n-gram LM fusion needs the asrpipe backend, not {backend!r} (or set decode.lm_order=0)")
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if num_classes is not None and not 0 <= blank < num_classes:
        raise ValueError(f"blank index {blank} is outside 0..{num_classes - 1} for a vocabulary of {num_classes}")
    if num_classes is None and blank < 0:
        raise ValueError(f"blank index must be >= 0, got {blank}")
    decoder = Decoder(backend, beam, blank, num_classes, workers, cutoff_top_n, (lm, alpha, beta) if lm else ())
    if backend in CUDA_BACKENDS:  # build now, so a torchaudio without it or a bad blank is one line here
        if num_classes is None:
            raise ValueError(f"the {backend!r} backend needs num_classes")
        try:
            decoder._decoder()
        except ImportError as exc:
            raise ValueError(f"CTC decoder backend {backend!r}: this torchaudio has no cuda_ctc_decoder ({exc})") from None
    return decoder
