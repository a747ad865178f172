"""Dev grid over the n-gram LM's order, alpha and beta for a trained hw3p2 pipeline, on its cached log-probs (no
network pass after the first): prints dev Levenshtein per setting next to no LM, best first, and the held-out
speakers' figure beside it where the profile has that set (choose on dev, check that it carries over).

    .venv/bin/python tools/lm_grid.py --task demo-hw3p2
    .venv/bin/python tools/lm_grid.py --task hw3p2 --config default --orders 3,4 --alphas 0.2,0.5,1 --betas 0,1
    .venv/bin/python tools/lm_grid.py --task demo-hw3p2 --set 'decode.ensemble_runs=[cab4b74d, 2dddf11f]'

Then decode with the best: `asrpipe decode --task demo-hw3p2 --set decode.lm_order=3 --set decode.alpha=0.5 ...`.
"""
from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", required=True)
    parser.add_argument("--config", default=None)
    parser.add_argument("--set", dest="sets", action="append", default=[])
    parser.add_argument("--orders", default="2,3,4")
    parser.add_argument("--alphas", default="0.1,0.3,0.5,1.0")
    parser.add_argument("--betas", default="0,0.5,1.0")
    parser.add_argument("--beam", type=int, default=None, help="default: the recipe's decode.beam")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    args = parser.parse_args()

    from pipeline.build import build_pipeline
    from pipeline.data.store import decode_stores
    from pipeline.decoding.ctc import make_decoder
    from pipeline.decoding.metrics import levenshtein_mean
    from pipeline.engine import StageRun
    from pipeline.stages.decode_ctc import decode_all, estimate_lm, model_log_probs, to_text

    pipeline = build_pipeline(args.task, args.config, args.sets, args.artifacts, Path("submissions"))
    select, normalize = pipeline.plan["select"], pipeline.plan["normalize"]
    if not select.artifact.complete:
        raise SystemExit(f"select is not complete ({select.dir}); run `asrpipe select --task {args.task}` first")
    stores = {name: store for name, store in decode_stores(normalize.dir).items() if name != "test"}
    decode = pipeline.plan["decode"]  # its log-probs: the selected model's, or the ensemble's (decode.ensemble_runs)
    run = StageRun(decode.stage, pipeline.profile, decode.params, decode.dir,
                   {name: pipeline.plan[name].artifact for name in decode.stage.upstream}, {},
                   pipeline.artifacts_root, pipeline.submissions_root, "",
                   {name: planned.artifact for name, planned in pipeline.plan.items()})
    log_probs = model_log_probs(run, stores, "cpu")[0]
    char_map = pipeline.profile.char_map
    refs = {name: [to_text(store.labels(i).tolist(), char_map) for i in range(len(store))]
            for name, store in stores.items()}
    num_classes = int(log_probs["dev"][0].shape[-1])
    beam = args.beam or pipeline.recipe["decode"]["beam"]

    def score(**fusion) -> list[float]:
        decoder = make_decoder("asrpipe", beam=beam, num_classes=num_classes, workers=args.workers, **fusion)
        try:
            return [levenshtein_mean(refs[name], [to_text(h, char_map) for h in decode_all(decoder, log_probs[name],
                                                                                             name)])
                    for name in stores]
        finally:
            decoder.close()

    started = time.perf_counter()
    rows = [("none", 0.0, 0.0, *score())]
    for order in [int(x) for x in args.orders.split(",")]:
        lm = estimate_lm(normalize.dir, num_classes, order)
        for alpha, beta in itertools.product(floats(args.alphas), floats(args.betas)):
            rows.append((str(order), alpha, beta, *score(lm=lm, alpha=alpha, beta=beta)))
    baseline = rows[0][3]
    print(f"{pipeline.profile.name}, select {select.dir.name}, beam {beam}, {len(refs['dev'])} dev utterances, "
          f"{len(rows)} settings in {time.perf_counter() - started:.0f} s")
    heldout = f" {'heldout':>8}" if "heldout" in stores else ""
    print(f"{'lm_order':>8} {'alpha':>6} {'beta':>6} {'dev lev':>8} {'vs no LM':>9}{heldout}")
    for order, alpha, beta, value, *others in sorted(rows, key=lambda row: row[3]):
        print(f"{order:>8} {alpha:>6g} {beta:>6g} {value:>8.3f} {value - baseline:>+9.3f}"
              + "".join(f" {other:>8.3f}" for other in others))


if __name__ == "__main__":
    main()
