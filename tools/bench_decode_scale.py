"""Decode the size of the hw3p2 test set (2,620 utterances of about 1,500 frames, 41 classes) at beam 20 with every
backend on every device it can use here, the way the decode stage does (length-sorted batches within its memory
budget): prints utterances/s per backend, device and worker count.

    .venv/bin/python tools/bench_decode_scale.py                       # all available backends, CPU and CUDA
    .venv/bin/python tools/bench_decode_scale.py --utterances 512 --backends asrpipe,cuda-ctc

Synthetic CTC-like log-probs (pipeline/decoding/ctc_synthetic.py), generated in seeded chunks. On CUDA the
log-probs are moved to the GPU before the clock starts (as the decode stage's are) and the clock stops after the
answers are back on the host.

Measured 2026-12-01 on the dev box (2 cores, idle; no GPU, no torchaudio matching torch 2.13):

    2620 utterances, 3943534 frames, 41 classes, beam 20
    backend            device workers   seconds     utt/s
    greedy             cpu          1      0.91    2880.0
    asrpipe            cpu          1     35.08      74.7
    asrpipe            cpu          2     18.60     140.9
    ctcdecode          cpu          1    418.28       6.3
    ctcdecode          cpu          2    234.77      11.2
"""
from __future__ import annotations

import argparse
import time

import torch

from pipeline.decoding.ctc import available_backends, make_decoder
from pipeline.decoding.ctc_synthetic import synthetic_ctc_batch
from pipeline.stages.decode_ctc import batches

CHUNK = 256


def synthetic_test_set(count: int, min_frames: int, max_frames: int, classes: int) -> list[torch.Tensor]:
    """Per-utterance (T, C) float32 log-probs, like the decode stage's cache."""
    utterances = []
    for seed, start in enumerate(range(0, count, CHUNK)):
        log_probs, lengths = synthetic_ctc_batch(min(CHUNK, count - start), min_frames, max_frames, classes, seed=seed)
        utterances += [log_probs[b, : lengths[b]].clone() for b in range(len(lengths))]
    return utterances


def configurations(names: list[str], workers: list[int]) -> list[tuple[str, str, int]]:
    """(backend, device, workers) to run: CPU backends at each worker count, CUDA ones once."""
    cuda = torch.cuda.is_available()
    runs = []
    for name in names:
        if name == "cuda-ctc":
            runs.append((name, "cuda", 1))
            continue
        runs += [(name, "cpu", w) for w in ([1] if name == "greedy" else workers)]
        if cuda and name in ("greedy", "asrpipe"):
            runs.append((name, "cuda", 1))
    return runs


def timed(name: str, device: str, workers: int, log_probs: list, beam: int, classes: int) -> float:
    decoder = make_decoder(name, beam=beam, num_classes=classes, workers=workers)
    prepared = [(padded.to(device), lengths.to(device)) for padded, lengths in batches(log_probs, beam)[1]]
    decoder.decode(*prepared[-1])  # warm-up: worker pool, CUDA context and kernels
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    decoded = sum(len(answers) for answers in decoder.decode_batches(prepared))
    seconds = time.perf_counter() - start
    decoder.close()
    assert decoded == len(log_probs)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--utterances", type=int, default=2620)
    parser.add_argument("--min-frames", type=int, default=1300)
    parser.add_argument("--max-frames", type=int, default=1700)
    parser.add_argument("--classes", type=int, default=41)
    parser.add_argument("--beam", type=int, default=20)
    parser.add_argument("--workers", default="1,2", help="CPU worker processes to try")
    parser.add_argument("--backends", default=",".join(available_backends()))
    args = parser.parse_args()

    log_probs = synthetic_test_set(args.utterances, args.min_frames, args.max_frames, args.classes)
    frames = sum(len(x) for x in log_probs)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"{len(log_probs)} utterances, {frames} frames, {args.classes} classes, beam {args.beam}; torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads, GPU: {gpu}")
    print(f"{'backend':<18} {'device':<6} {'workers':>7} {'seconds':>9} {'utt/s':>9}")
    names = [n for n in args.backends.split(",") if n]
    for name, device, workers in configurations(names, [int(w) for w in args.workers.split(",")]):
        seconds = timed(name, device, workers, log_probs, args.beam, args.classes)
        print(f"{name:<18} {device:<6} {workers:>7} {seconds:>9.2f} {len(log_probs) / seconds:>9.1f}", flush=True)


if __name__ == "__main__":
    main()
