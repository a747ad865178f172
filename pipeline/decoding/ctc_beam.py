"""CTC prefix beam search, vectorized over the batch in torch (one code path for CPU and CUDA).

The search is ctcdecode's: every prefix carries two shares of probability, `p_blank` (paths ending in blank)
and `p_nonblank` (paths ending in the prefix's last token), and is ranked by their sum. At each frame a
prefix either stays (blank, or a repeat of its last token without a blank in between) or is extended by a
non-blank token (the same token as its last one only from `p_blank`). Candidates equal as label sequences
are merged: since the beam holds distinct prefixes, the only candidates that can coincide are "stay of
prefix P" and "extend P[:-1] by P's last token", so a (beam x beam) comparison of hashes finds every merge
without sorting. The beam keeps the `beam` best distinct prefixes by total probability.

State per (utterance, slot): p_blank, p_nonblank, last token, length, a hash of the prefix and of the prefix
without its last token. Back-pointers (source slot, emitted token) per frame rebuild the winner at the end.
Utterances are processed longest first so frame t touches only the `active(t)` utterances still running.
"""
from __future__ import annotations

import torch

NEG_INF = float("-inf")

# Two polynomial hashes modulo the Mersenne prime 2^31-1, packed in one int64: every product stays below 2^62,
# so int64 arithmetic is exact on CPU and CUDA. Merges also require equal last token and length.
_HASH_MOD = 2_147_483_647
_HASH_MUL_HIGH = 1_103_515_245
_HASH_MUL_LOW = 48_271
_NO_PARENT = -1


def _extend_hash(prefix_hash: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
    high, low = prefix_hash // _HASH_MOD, prefix_hash % _HASH_MOD
    high = (high * _HASH_MUL_HIGH + token + 1) % _HASH_MOD
    low = (low * _HASH_MUL_LOW + token + 1) % _HASH_MOD
    return high * _HASH_MOD + low


def _extension_tokens(
    log_probs_tbc: torch.Tensor, blank: int, prune_top_k: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per frame, the non-blank tokens considered for extension and their log-probs, both (T, B, k)."""
    num_classes = log_probs_tbc.shape[-1]
    device = log_probs_tbc.device
    non_blank = torch.tensor([c for c in range(num_classes) if c != blank], device=device)
    scores = log_probs_tbc.index_select(-1, non_blank)
    if prune_top_k is not None and prune_top_k < non_blank.numel():
        scores, positions = scores.topk(prune_top_k, dim=-1)
        return non_blank[positions], scores
    return non_blank.expand(scores.shape).contiguous(), scores


class _Beams:
    """Beam state of the active utterances (rows) x slots; all tensors (N, K)."""

    def __init__(self, batch: int, beam: int, device: torch.device, dtype: torch.dtype):
        self.p_blank = torch.full((batch, beam), NEG_INF, device=device, dtype=dtype)
        self.p_blank[:, 0] = 0.0  # one live prefix: the empty one
        self.p_nonblank = torch.full((batch, beam), NEG_INF, device=device, dtype=dtype)
        self.last = torch.full((batch, beam), -1, device=device, dtype=torch.long)
        self.length = torch.zeros((batch, beam), device=device, dtype=torch.long)
        self.hash = torch.zeros((batch, beam), device=device, dtype=torch.long)
        self.parent_hash = torch.full((batch, beam), _NO_PARENT, device=device, dtype=torch.long)

    def total(self) -> torch.Tensor:
        return torch.logaddexp(self.p_blank, self.p_nonblank)


def _step(
    beams: _Beams,
    n: int,
    frame: torch.Tensor,
    ext_tokens: torch.Tensor,
    ext_scores: torch.Tensor,
    blank: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advance the first `n` utterances by one frame in place; return (source slot, emitted token or -1)."""
    p_blank, p_nonblank = beams.p_blank[:n], beams.p_nonblank[:n]
    last, length = beams.last[:n], beams.length[:n]
    prefix_hash, parent_hash = beams.hash[:n], beams.parent_hash[:n]
    beam = p_blank.shape[1]
    top_k = ext_tokens.shape[1]

    total = torch.logaddexp(p_blank, p_nonblank)
    alive = total > NEG_INF
    last_score = frame.gather(1, last.clamp(min=0))
    stay_blank = total + frame[:, blank : blank + 1]
    stay_nonblank = torch.where(length > 0, p_nonblank + last_score, NEG_INF)

    # Slot j's prefix may also be reached by extending slot i (its prefix minus the last token) with last[j].
    match = (
        (parent_hash[:, :, None] == prefix_hash[:, None, :])
        & (length[:, :, None] == length[:, None, :] + 1)
        & alive[:, :, None]
        & alive[:, None, :]
    )  # (n, j, i)
    same_last = last[:, :, None] == last[:, None, :]
    from_parent = torch.where(same_last, p_blank[:, None, :], total[:, None, :]) + last_score[:, :, None]
    from_parent = from_parent.masked_fill(~match, NEG_INF).amax(dim=2)  # at most one parent per slot
    stay_nonblank = torch.logaddexp(stay_nonblank, from_parent)

    # Extensions: (n, slot, k). Repeating the last token needs a blank in between, so only p_blank feeds it.
    repeats_last = ext_tokens[:, None, :] == last[:, :, None]
    extend = torch.where(repeats_last, p_blank[:, :, None], total[:, :, None]) + ext_scores[:, None, :]
    # The extension that was merged into slot j above must not compete a second time.
    has_parent = match.any(dim=2)
    parent_slot = match.to(torch.uint8).argmax(dim=2)
    token_column = repeats_last.to(torch.uint8).argmax(dim=2)  # position of last[j] among slot j's tokens
    token_present = repeats_last.any(dim=2)
    merged_column = parent_slot * top_k + token_column
    merged_column = torch.where(has_parent & token_present, merged_column, beam * top_k)  # dummy column
    extend = torch.cat([extend.reshape(n, beam * top_k), extend.new_full((n, 1), NEG_INF)], dim=1)
    extend.scatter_(1, merged_column, NEG_INF)

    candidates = torch.cat([torch.logaddexp(stay_blank, stay_nonblank), extend[:, :-1]], dim=1)
    best, chosen = candidates.topk(beam, dim=1)

    is_extension = chosen >= beam
    ext_index = (chosen - beam).clamp(min=0)
    stay_index = chosen.clamp(max=beam - 1)
    source = torch.where(is_extension, torch.div(ext_index, top_k, rounding_mode="floor"), chosen)
    token = ext_tokens.gather(1, ext_index % top_k)
    source_hash = prefix_hash.gather(1, source)

    beams.p_blank[:n] = torch.where(is_extension, NEG_INF, stay_blank.gather(1, stay_index))
    beams.p_nonblank[:n] = torch.where(is_extension, extend.gather(1, ext_index), stay_nonblank.gather(1, stay_index))
    beams.hash[:n] = torch.where(is_extension, _extend_hash(source_hash, token), source_hash)
    beams.parent_hash[:n] = torch.where(is_extension, source_hash, parent_hash.gather(1, source))
    beams.last[:n] = torch.where(is_extension, token, last.gather(1, source))
    beams.length[:n] = length.gather(1, source) + is_extension.long()
    return source, torch.where(is_extension, token, -1)


def _backtrack(sources: torch.Tensor, emitted: torch.Tensor, active: list[int]) -> list[list[list[int]]]:
    """Follow back-pointers from every final slot; sources/emitted are (T, B, K). Returns [utterance][slot]."""
    num_frames, batch, beam = sources.shape
    slot = torch.arange(beam, device=sources.device).repeat(batch, 1)
    tokens = torch.full((batch, beam, num_frames), -1, dtype=torch.int32, device=sources.device)
    for t in range(num_frames - 1, -1, -1):
        n = active[t]
        current = slot[:n]
        tokens[:n, :, t] = emitted[t, :n].gather(1, current)
        slot[:n] = sources[t, :n].gather(1, current).long()
    tokens = tokens.cpu()
    return [[row[row >= 0].tolist() for row in utterance] for utterance in tokens]


@torch.no_grad()
def prefix_beam_search_nbest(
    log_probs: torch.Tensor,
    lengths: torch.Tensor,
    beam: int = 20,
    blank: int = 0,
    prune_top_k: int | None = None,
) -> tuple[list[list[list[int]]], torch.Tensor]:
    """The final beam of every utterance, best first: hypotheses [utterance][rank] and beam scores (B, beam).

    Scores are log probs (float32/64 like the input, on CPU); ranks past the live prefixes score -inf and
    are left out of the lists. `prune_top_k` limits extensions at each frame to the k most probable
    non-blank tokens (stays and merges always use the exact probabilities).
    """
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    batch, _, num_classes = log_probs.shape
    dtype = log_probs.dtype if log_probs.dtype in (torch.float32, torch.float64) else torch.float32
    if batch == 0:
        return [], torch.empty((0, beam), dtype=dtype)
    device = log_probs.device
    lengths = lengths.to(device=device, dtype=torch.long)
    max_frames = int(lengths.max().item())
    order = torch.argsort(lengths, descending=True, stable=True)
    # active[t] = number of utterances longer than t; they are the first rows once sorted.
    frame_index = torch.arange(max_frames, device=device)
    active = (lengths[order][None, :] > frame_index[:, None]).sum(dim=1).tolist()

    frames = log_probs[order, :max_frames].to(dtype).transpose(0, 1).contiguous()  # (T, B, C)
    ext_tokens, ext_scores = _extension_tokens(frames, blank, prune_top_k)
    beams = _Beams(batch, beam, device, dtype)
    sources = torch.zeros((max_frames, batch, beam), dtype=torch.int32, device=device)
    emitted = torch.full((max_frames, batch, beam), -1, dtype=torch.int32, device=device)
    for t in range(max_frames):
        n = active[t]
        source, token = _step(beams, n, frames[t, :n], ext_tokens[t, :n], ext_scores[t, :n], blank)
        sources[t, :n] = source.to(torch.int32)
        emitted[t, :n] = token.to(torch.int32)

    sorted_nbest = _backtrack(sources, emitted, active)
    sorted_scores = beams.total().cpu()  # slots stay sorted by topk, best first
    nbest: list[list[list[int]]] = [[] for _ in range(batch)]
    for position, utterance in enumerate(order.tolist()):
        live = int((sorted_scores[position] > NEG_INF).sum())
        nbest[utterance] = sorted_nbest[position][:live]
    scores = torch.empty_like(sorted_scores)
    scores[order.cpu()] = sorted_scores
    return nbest, scores


def prefix_beam_search(
    log_probs: torch.Tensor,
    lengths: torch.Tensor,
    beam: int = 20,
    blank: int = 0,
    prune_top_k: int | None = None,
) -> tuple[list[list[int]], torch.Tensor]:
    """Best label sequence per utterance and its beam score (log prob, on CPU)."""
    nbest, scores = prefix_beam_search_nbest(log_probs, lengths, beam, blank, prune_top_k)
    return [hypotheses[0] for hypotheses in nbest], scores[:, 0]
