"""Greedy and beam search for attention decoders (LAS, Transformer) through their incremental interface:

    memory = model.encode(x, lengths); state = model.start(memory)
    logits, state, attention = model.step(state, tokens)      # one output position for every row
    state = model.reorder(state, rows)                         # beam search: keep / duplicate rows

Only the profile's output characters and <eos> may be emitted (<pad>, <sos> and other specials are masked).
Beam search keeps `beam` live hypotheses per utterance; a hypothesis ending in <eos> among the top `beam`
candidates is finished with score log P / length^alpha (length counts the <eos>); an utterance stops once it has
`beam` finished hypotheses, or at max_length (its live hypotheses then count only if none finished). With beam 1
this is exactly greedy search.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.decoding.ctc_prefix_score import CTCPrefixScorer


def to_text(tokens, symbols: list[str]) -> str:
    """Token indices → the transcript (indices past the profile's symbols, e.g. an appended pad, are dropped)."""
    return "".join(symbols[t] for t in tokens if t < len(symbols))


def allowed_tokens(cfg, device=None) -> torch.Tensor:
    """(V,) bool: what the decoder may emit."""
    allowed = torch.zeros(cfg.vocab_size, dtype=torch.bool, device=device)
    if cfg.output_tokens is not None:
        allowed[cfg.output_tokens] = True
    else:
        allowed[:] = True
        allowed[[cfg.pad, cfg.sos]] = False
    allowed[cfg.eos] = True
    return allowed


def _cut_at_eos(row: list[int], eos: int) -> list[int]:
    return row[: row.index(eos)] if eos in row else row


@torch.no_grad()
def greedy_search(model, x: torch.Tensor, lengths: torch.Tensor, max_length: int, with_attention: bool = False):
    """Batched argmax decoding → token lists without <eos> (and, if asked, each utterance's attention (L, T'))."""
    cfg = model.cfg
    allowed = allowed_tokens(cfg, x.device)
    state = model.start(model.encode(x, lengths))
    B = x.shape[0]
    tokens = torch.full((B,), cfg.sos, dtype=torch.long, device=x.device)
    done = torch.zeros(B, dtype=torch.bool, device=x.device)
    outputs, attention = [], []
    for _ in range(max_length):
        logits, state, weights = model.step(state, tokens)
        tokens = logits.float().masked_fill(~allowed, float("-inf")).argmax(dim=-1)
        outputs.append(tokens)
        if with_attention:
            attention.append(weights.float())
        done |= tokens == cfg.eos
        if bool(done.all()):
            break
    rows = torch.stack(outputs, dim=1).tolist()
    hypotheses = [_cut_at_eos(row, cfg.eos) for row in rows]
    if not with_attention:
        return hypotheses
    weights = torch.stack(attention, dim=1).cpu()                 # (B, L, T')
    enc_lengths = state["lengths"].cpu()
    maps = [weights[b, : len(h) + 1, : int(enc_lengths[b])] for b, h in enumerate(hypotheses)]
    return hypotheses, maps


@torch.no_grad()
def beam_search(model, x: torch.Tensor, lengths: torch.Tensor, beam: int, max_length: int,
                alpha: float = 1.0, ctc_weight: float = 0.0,
                length_bonus: float = 0.0) -> list[list[tuple[float, list[int]]]]:
    """Per utterance: finished hypotheses (normalized score, tokens without <eos>), best first.

    Joint CTC/attention decoding (Watanabe et al. 2017) when ctc_weight λ > 0: a hypothesis h scores
    (1-λ)·log P_att(h) + λ·log P_ctc-prefix(h) + length_bonus·|h|, with the model's CTC head (blank = pad). λ = 0
    and no bonus is the plain attention search.
    """
    cfg = model.cfg
    allowed = allowed_tokens(cfg, x.device)
    B, K = x.shape[0], beam
    memory = model.encode(x, lengths)
    ctc = None
    if ctc_weight > 0:
        if memory.get("ctc_log_probs") is None:
            raise ValueError("decode.ctc_weight > 0 needs a model with a CTC head (model.ctc_head: true, trained "
                             "with train.ctc_weight > 0)")
        ctc = CTCPrefixScorer(memory["ctc_log_probs"], memory["lengths"], blank=cfg.pad, eos=cfg.eos)
        ctc_state = ctc.initial(torch.arange(B, device=x.device).repeat_interleave(K))
    state = model.start(memory)  # start() keeps the CTC log-probs out of the per-row decoder state
    state = model.reorder(state, torch.arange(B, device=x.device).repeat_interleave(K))
    scores = torch.full((B, K), float("-inf"), device=x.device)
    scores[:, 0] = 0.0                                     # one live hypothesis per utterance at the start
    att = torch.zeros(B * K, device=x.device)              # each row's attention log P (joint scoring only)
    tokens = torch.full((B * K,), cfg.sos, dtype=torch.long, device=x.device)
    history = torch.zeros(B * K, 0, dtype=torch.long, device=x.device)
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(B)]
    active = [True] * B
    for t in range(max_length):
        logits, state, _ = model.step(state, tokens)
        log_probs = F.log_softmax(logits.float().masked_fill(~allowed, float("-inf")), dim=-1)
        V = log_probs.shape[-1]
        if ctc is None:
            step_scores = scores.reshape(B * K, 1) + log_probs + length_bonus
        else:
            psi, extended = ctc.extend(ctc_state)
            attention = ((1 - ctc_weight) * (att[:, None] + log_probs)).masked_fill(~allowed, float("-inf"))
            step_scores = attention + ctc_weight * psi + length_bonus * (t + 1)  # (masked: 0 x -inf is NaN at λ=1)
            step_scores = step_scores.masked_fill(~torch.isfinite(scores.reshape(B * K, 1)), float("-inf"))
        candidates = step_scores.reshape(B, K * V)
        top_scores, top_index = candidates.topk(min(2 * K, K * V), dim=1)
        top_scores, top_index = top_scores.tolist(), top_index.tolist()
        new_scores = [[float("-inf")] * K for _ in range(B)]
        new_rows = [[b * K] * K for b in range(B)]
        new_tokens = [[cfg.eos] * K for _ in range(B)]
        for b in range(B):
            if not active[b]:
                continue
            chosen = 0
            for j, (score, flat) in enumerate(zip(top_scores[b], top_index[b])):
                if score == float("-inf") or chosen == K:
                    break
                source, token = divmod(flat, V)
                if token == cfg.eos:
                    if j < K:   # only an <eos> that ranks among the top `beam` candidates ends a hypothesis
                        finished[b].append((score / (t + 1) ** alpha, history[b * K + source].tolist()))
                    continue
                new_scores[b][chosen], new_rows[b][chosen], new_tokens[b][chosen] = score, b * K + source, token
                chosen += 1
            if len(finished[b]) >= K or chosen == 0:
                active[b] = False
        if not any(active):
            break
        rows = torch.tensor(new_rows, device=x.device).reshape(-1)
        tokens = torch.tensor(new_tokens, device=x.device).reshape(-1)
        scores = torch.tensor(new_scores, device=x.device)
        if ctc is not None:
            att = att[rows] + log_probs[rows, tokens]
            ctc_state = CTCPrefixScorer.select(extended, rows, tokens, ctc_state)
        state = model.reorder(state, rows)
        history = torch.cat([history[rows], tokens[:, None]], dim=1)
    else:  # max_length reached: live hypotheses (no <eos>) count only where nothing finished — a looping
        for b in range(B):  # hypothesis must not beat a finished one through length normalization
            if active[b] and not finished[b]:
                for k in range(K):
                    score = float(scores[b, k])
                    if score > float("-inf"):
                        finished[b].append((score / max_length ** alpha, history[b * K + k].tolist()))
    return [sorted(f, key=lambda item: -item[0]) or [(0.0, [])] for f in finished]


@torch.no_grad()
def ctc_greedy_search(model, x: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    """The CTC head's best path (repeats collapsed, blanks = pad dropped): a decode mode of its own."""
    from pipeline.decoding.ctc_greedy import greedy_decode

    memory = model.encode(x, lengths)
    if memory.get("ctc_log_probs") is None:
        raise ValueError("decode.mode=ctc_greedy needs a model with a CTC head (model.ctc_head: true)")
    cfg = model.cfg
    emittable = allowed_tokens(cfg, x.device)  # the output characters (CTC targets never hold sos/eos) + blank
    emittable[cfg.eos] = False
    emittable[cfg.pad] = True
    log_probs = memory["ctc_log_probs"].masked_fill(~emittable, float("-inf"))
    return greedy_decode(log_probs, memory["lengths"], blank=cfg.pad)


def decode_batch(model, x: torch.Tensor, lengths: torch.Tensor, beam: int, max_length: int,
                 alpha: float = 1.0, ctc_weight: float = 0.0, length_bonus: float = 0.0,
                 mode: str = "attention") -> list[list[tuple[float, list[int]]]]:
    """n-best lists for a batch: greedy search when beam == 1 (cheaper, same answer) and no CTC/bonus terms;
    mode "ctc_greedy": the CTC head's best path."""
    if mode == "ctc_greedy":
        return [[(0.0, h)] for h in ctc_greedy_search(model, x, lengths)]
    if beam == 1 and ctc_weight == 0 and length_bonus == 0:
        return [[(0.0, h)] for h in greedy_search(model, x, lengths, max_length)]
    return beam_search(model, x, lengths, beam, max_length, alpha, ctc_weight, length_bonus)
