"""Benchmark the CTC decoders on the same synthetic log-probs: speed and search quality.

    .venv/bin/python tools/bench_decode.py            # 64 utterances, 200-800 frames (about a minute)
    .venv/bin/python tools/bench_decode.py --full     # DESIGN.md's set: 256 utterances, 200-1600 frames
    .venv/bin/python tools/bench_decode.py --full --workers 2 --beam 20 --hardness 2

Search quality is measured exactly: the CTC log-likelihood log p(hypothesis | x) of each backend's answer
(torch ctc_loss, float64). "Δ log p" is its mean gain over greedy's answer; "search errors" counts utterances
where a backend's answer is less probable than the best answer any backend found.

Measured 2026-12-01 on the dev box (2 cores, idle), `--full` (beam 20, hardness 1), with the real ctcdecode 1.0.2
built by ../shared/tools/ctcdecode/build.sh (its default cutoff_top_n=40; ours exact):

    backend              utt/s, 1 worker  utt/s, 2 workers  Δ log p vs greedy  search errors
    greedy                        2275.0            2443.9             +0.000        256/256
    asrpipe                         68.8             105.6             +9.380         98/256
    ctc-beam-decoder                44.0              80.0             +9.698         62/256
    ctcdecode                       10.0              23.0             +9.380         98/256

asrpipe is 6.9x ctcdecode's speed at 1 worker, 4.6x at 2, with the same answers here. One call's utterances are
split among the workers (ctc_backends.split_for_workers); the decode stage hands whole batches to workers instead
(decode_batches), which tools/bench_decode_scale.py measures: 74.7 -> 140.9 utt/s on the test-set size.

On these synthetic outputs ranking prefixes by p_blank+p_nonblank (ctcdecode, ours) does NOT beat
ctc-beam-decoder's separate entries: the beam fills with variants of earlier ambiguities, and which
alignments of the eventual winner survive decides the answer. DESIGN.md's table (ctcdecode +0.92 vs
ctc-beam-decoder +0.39) came from a different synthetic set.
"""
from __future__ import annotations

import argparse
import time

import torch

from pipeline.decoding.ctc import available_backends, ctc_log_likelihood, make_decoder
from pipeline.decoding.ctc_synthetic import synthetic_ctc_batch

SEARCH_ERROR_TOLERANCE = 1e-6


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="256 utterances of 200-1600 frames (DESIGN.md)")
    parser.add_argument("--utterances", type=int, default=64)
    parser.add_argument("--min-frames", type=int, default=200)
    parser.add_argument("--max-frames", type=int, default=800)
    parser.add_argument("--classes", type=int, default=41, help="vocabulary including blank")
    parser.add_argument("--beam", type=int, default=20)
    parser.add_argument("--workers", default="1,2", help="worker processes; a list runs each backend once per count")
    parser.add_argument("--cutoff-top-n", type=int, default=None,
                        help="classes kept per frame (ctcdecode's cutoff_top_n) for asrpipe and ctcdecode; "
                             "default: ours exact, ctcdecode its own 40")
    parser.add_argument("--hardness", type=float, default=1.0, help="scales the number of ambiguous frames")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backends", default=",".join(available_backends()))
    parser.add_argument("--logprobs", help="a decode-stage cache file (artifacts/<task>/logprobs/<key>/dev.pt): "
                                           "benchmark on a real model's outputs instead of synthetic ones")
    args = parser.parse_args()
    if args.full:
        args.utterances, args.min_frames, args.max_frames = 256, 200, 1600
    return args


def run_backend(name: str, workers: int, args: argparse.Namespace, log_probs: torch.Tensor, lengths: torch.Tensor):
    decoder = make_decoder(
        name, beam=args.beam, num_classes=args.classes, workers=workers, cutoff_top_n=args.cutoff_top_n
    )
    decoder.decode(log_probs[:2], lengths[:2])  # start the worker pool outside the timing
    start = time.perf_counter()
    hypotheses = decoder.decode(log_probs, lengths)
    seconds = time.perf_counter() - start
    close = getattr(decoder, "close", None)
    if close:
        close()
    return hypotheses, seconds


def main() -> None:
    args = parse_args()
    if args.logprobs:
        per_utterance = torch.load(args.logprobs)
        lengths = torch.tensor([len(x) for x in per_utterance])
        log_probs = torch.nn.utils.rnn.pad_sequence(per_utterance, batch_first=True)
        args.utterances, args.classes = len(per_utterance), log_probs.shape[-1]
        args.min_frames, args.max_frames = int(lengths.min()), int(lengths.max())
    else:
        log_probs, lengths = synthetic_ctc_batch(
            args.utterances, args.min_frames, args.max_frames, args.classes, seed=args.seed, hardness=args.hardness
        )
    worker_counts = [int(w) for w in str(args.workers).split(",")]
    print(
        f"{args.utterances} utterances, {args.min_frames}-{args.max_frames} frames ({int(lengths.sum())} total), "
        f"{args.classes} classes, beam {args.beam}, workers {worker_counts}, torch threads {torch.get_num_threads()}"
    )
    backends = [name for name in args.backends.split(",") if name]
    if "greedy" not in backends:
        backends.insert(0, "greedy")
    runs = {(name, w): run_backend(name, w, args, log_probs, lengths) for name in backends for w in worker_counts}
    scores = {name: ctc_log_likelihood(log_probs, lengths, runs[name, worker_counts[0]][0]) for name in backends}
    best = torch.stack(list(scores.values())).max(dim=0).values

    speed_columns = "".join(f"{f'utt/s, {w} worker' + ('s' if w > 1 else ''):>18}" for w in worker_counts)
    print(f"{'backend':<18}{speed_columns} {'Δ log p vs greedy':>18} {'search errors':>14}")
    for name in backends:
        gain = float((scores[name] - scores["greedy"]).mean())
        errors = int((scores[name] < best - SEARCH_ERROR_TOLERANCE).sum())
        speeds = "".join(f"{args.utterances / runs[name, w][1]:>18.1f}" for w in worker_counts)
        print(f"{name:<18}{speeds} {gain:>+18.3f} {errors:>10d}/{args.utterances}")
    for other in ("ctcdecode", "ctc-beam-decoder"):
        if "asrpipe" in backends and other in backends:
            ratios = ", ".join(f"{runs[other, w][1] / runs['asrpipe', w][1]:.2f}x at {w}" for w in worker_counts)
            print(f"asrpipe speed / {other} speed: {ratios}")


if __name__ == "__main__":
    main()
