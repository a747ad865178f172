"""decode (hw4p2): greedy and beam search (length-normalized, <eos>-terminated, capped at max_length) over dev
and test with the selected LAS / Transformer model.

Dev gets greedy, beam and oracle (closest hypothesis in the final beam) distance side by side, in the profile's
metric (character Levenshtein, or CER); a held-out store (unseen speakers) gets the beam figure and its count of
looping hypotheses. Outputs: `test_hypotheses.json` ({"ids", "tokens"}: symbol indices of output characters only,
for the csv stage), `dev_results.json` (and `heldout_results.json`).
"""
from __future__ import annotations

import time

from pipeline.engine import EngineError, Stage, StageRun
from pipeline.files import write_json_atomic
from pipeline.tasks.profiles import Profile


# Search options and their "off" values: absent from the params when off, so existing decode keys stay put.
SEARCH_OFF = {"mode": "attention", "ctc_weight": 0.0, "length_bonus": 0.0}


def params(profile: Profile, recipe: dict) -> dict:
    decode = recipe["decode"]
    chosen = {"beam": decode["beam"], "length_alpha": decode["length_alpha"], "max_length": decode["max_length"],
              "batch_size": decode["batch_size"], "metric": profile.metric}
    return {**chosen, **{key: decode[key] for key, off in SEARCH_OFF.items() if decode[key] != off}}


def label(params: dict) -> str:
    if params.get("mode") == "ctc_greedy":
        return "ctc-greedy"
    joint = f"-ctc{params['ctc_weight']:g}" if params.get("ctc_weight") else ""
    bonus = f"-lb{params['length_bonus']:g}" if params.get("length_bonus") else ""
    return f"beam{params['beam']}-a{params['length_alpha']:g}-max{params['max_length']}{joint}{bonus}"


def search_options(params: dict) -> dict:
    return {key: params.get(key, off) for key, off in SEARCH_OFF.items()}


def decode_store(model, store, beam: int, max_length: int, alpha: float, batch_size: int, description: str,
                 **search):
    """n-best lists per utterance in store order, decoded in length-sorted batches (little padding) on the model's
    device; the n-best lists are plain Python (CPU)."""
    from pipeline.decoding.attention_search import decode_batch
    from pipeline.decoding.batches import length_batches, model_device, pad_batch, scatter
    from pipeline.progress import progress_bar

    device = model_device(model)
    rows = max(1, batch_size // beam) if beam > 1 else batch_size
    batches = length_batches(store.lengths, rows)
    results = []
    with progress_bar() as bar:
        task = bar.add_task(description, total=len(store))
        for batch in batches:
            padded, lengths = pad_batch([store.features(i) for i in batch], device)
            results.append(decode_batch(model, padded, lengths, beam, max_length, alpha, **search))
            bar.advance(task, len(batch))
    return scatter(batches, results, len(store))


def run(run: StageRun) -> dict:
    import torch

    with torch.inference_mode():  # a context, not set_grad_enabled(False): a later stage in this process may train
        return decode_dev_and_test(run)


def decode_dev_and_test(run: StageRun) -> dict:
    from pipeline.data.store import decode_stores
    from pipeline.device import resolve_device
    from pipeline.models.load import load_model
    from pipeline.decoding.attention_search import to_text
    from pipeline.decoding.metrics import repeated_phrases, score

    device = resolve_device(run.options.get("device"))  # first: a device we cannot use fails before any work
    normalized = run.inputs["normalize"].dir
    stores = decode_stores(normalized)
    dev, test = stores["dev"], stores["test"]
    model = load_model(run.inputs["select"].dir / "model.pt", device)
    symbols, p = list(run.profile.symbols), run.params
    references = lambda store: [to_text(store.labels(i).tolist(), symbols) for i in range(len(store))]  # noqa: E731
    refs = references(dev)
    texts = lambda hyps: [to_text(h, symbols) for h in hyps]  # noqa: E731

    started = time.perf_counter()
    greedy = [nbest[0][1] for nbest in decode_store(model, dev, 1, p["max_length"], 0.0, p["batch_size"], "greedy dev")]
    greedy_seconds = time.perf_counter() - started
    started = time.perf_counter()
    search = search_options(p)
    try:
        dev_nbest = decode_store(model, dev, p["beam"], p["max_length"], p["length_alpha"], p["batch_size"],
                                 f"beam {p['beam']} dev", **search)
    except ValueError as exc:  # a CTC decode of a model without a CTC head
        raise EngineError(f"decode.mode / decode.ctc_weight: {exc}") from None
    beam_seconds = time.perf_counter() - started
    started = time.perf_counter()
    test_nbest = decode_store(model, test, p["beam"], p["max_length"], p["length_alpha"], p["batch_size"],
                              f"beam {p['beam']} test", **search)
    test_seconds = time.perf_counter() - started
    dev_beam = [nbest[0][1] for nbest in dev_nbest]
    oracle = [min((h for _, h in nbest), key=lambda h: score(p["metric"], [ref], [to_text(h, symbols)]))
              for ref, nbest in zip(refs, dev_nbest)]

    metrics = {
        "dev_greedy": score(p["metric"], refs, texts(greedy)),
        "dev_beam": score(p["metric"], refs, texts(dev_beam)),
        "dev_oracle": score(p["metric"], refs, texts(oracle)),
        "dev_empty": score(p["metric"], refs, [""] * len(refs)),
        "dev_repeated_phrases": repeated_phrases(texts(dev_beam)),   # hypotheses looping on a phrase
        "test_repeated_phrases": repeated_phrases(texts([nbest[0][1] for nbest in test_nbest])),
        "metric": p["metric"],
        "dev_greedy_seconds": round(greedy_seconds, 2),
        "dev_beam_seconds": round(beam_seconds, 2),
        "test_seconds": round(test_seconds, 2),
        "test_utterances": len(test_nbest),
        "device": str(device),
    }
    if "heldout" in stores:  # unseen speakers: the figure a recipe change is judged on
        heldout = stores["heldout"]
        heldout_refs = references(heldout)
        heldout_beam = texts([nbest[0][1] for nbest in decode_store(
            model, heldout, p["beam"], p["max_length"], p["length_alpha"], p["batch_size"],
            f"beam {p['beam']} heldout", **search)])
        metrics.update(heldout_beam=score(p["metric"], heldout_refs, heldout_beam),
                       heldout_repeated_phrases=repeated_phrases(heldout_beam))
        write_json_atomic(run.out / "heldout_results.json",
                          {"ids": heldout.ids, "reference": heldout_refs, "beam": heldout_beam})
    write_json_atomic(run.out / "dev_results.json", {
        "ids": dev.ids, "reference": refs, "greedy": texts(greedy), "beam": texts(dev_beam)})
    write_json_atomic(run.out / "test_hypotheses.json",
                      {"ids": test.ids, "tokens": [nbest[0][1] for nbest in test_nbest]})
    run.log(f"dev {p['metric']}: greedy {metrics['dev_greedy']:.3f}  beam {metrics['dev_beam']:.3f}  "
            f"oracle {metrics['dev_oracle']:.3f}  (empty output {metrics['dev_empty']:.3f})"
            + (f"; held-out speakers: beam {metrics['heldout_beam']:.3f}, {metrics['heldout_repeated_phrases']} "
               f"looping" if "heldout" in stores else "") + f"; decoded on {device}")
    return metrics


STAGE = Stage(name="decode", upstream=("normalize", "select"),
              params=params, label=label, run=run)
