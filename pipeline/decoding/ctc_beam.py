"""CTC prefix beam search, vectorized over the batch in torch (one code path for CPU and CUDA).

The search is ctcdecode's: every prefix carries two shares of probability, `p_blank` (paths ending in blank)
and `p_nonblank` (paths ending in the prefix's last token), and is ranked by their sum. At each frame a
prefix either stays (blank, or a repeat of its last token without a blank in between) or is extended by a
non-blank token (the same token as its last one only from `p_blank`). The beam keeps the `beam` best
distinct prefixes by total probability.

Merging equal prefixes: the beam holds distinct prefixes, so the only candidates that can coincide are
"stay of prefix P" and "extend P[:-1] by P's last token". A (beam x beam) comparison of prefix hashes with
parent hashes finds each slot's parent; the parent's extension is added into the slot's stay and removed
from the extensions.

Fewer candidates, same answer: slots are sorted by total and each frame's tokens by log-prob, so the
extension (slot rank r, token rank s) is beaten by at least (r+1)*s - 1 other candidates (one exception per
slot: repeating its last token, which scores lower). Only pairs with (r+1)*s <= beam can reach the top
`beam`: about beam*(ln(beam)+2) pairs instead of beam*(classes-1), and at most beam+1 tokens per frame.

State per (utterance, slot): p_blank, p_nonblank, last token, and hashes of the prefix and of its parent.
Back-pointers (source slot, emitted token) per frame rebuild the answers at the end. Utterances run longest
first, so frame t only touches the utterances that are still running, and padding never changes a beam.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

NEG_INF = float("-inf")

# Two polynomial hashes modulo the Mersenne prime 2^31-1, packed in one int64: every product stays below 2^62,
# so int64 arithmetic is exact on CPU and CUDA.
_HASH_MOD = 2_147_483_647
_HASH_MUL_HIGH = 1_103_515_245
_HASH_MUL_LOW = 48_271
_NO_PARENT = -1  # parent hash of the empty prefix and of empty slots; real hashes are >= 0


def _extend_hash(prefix_hash: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
    high, low = prefix_hash // _HASH_MOD, prefix_hash % _HASH_MOD
    high = (high * _HASH_MUL_HIGH + token + 1) % _HASH_MOD
    low = (low * _HASH_MUL_LOW + token + 1) % _HASH_MOD
    return high * _HASH_MOD + low


def _dead_slot_hashes(rows: int, beam: int, device: torch.device) -> torch.Tensor:
    """Distinct hashes below -1 for slots holding no prefix, so no parent hash ever matches them."""
    return (-2 - torch.arange(beam, device=device)).repeat(rows, 1)


def _sorted_extension_tokens(
    frames: torch.Tensor, blank: int, keep: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per frame the `keep` most probable non-blank tokens and their log-probs, best first; both (T, B, keep)."""
    num_classes = frames.shape[-1]
    non_blank = torch.tensor([c for c in range(num_classes) if c != blank], device=frames.device)
    scores, positions = frames.index_select(-1, non_blank).topk(keep, dim=-1)
    return non_blank[positions], scores


class _Region:
    """The (slot rank, token rank) pairs that can still make the top `beam`: (r+1)*s <= beam; every pair when
    `full` (with a language model each slot ranks the tokens differently, so the bound does not hold)."""

    def __init__(self, beam: int, tokens: int, device: torch.device, full: bool = False):
        pairs = [(r, s) for r in range(beam) for s in range(tokens if full else min(tokens, beam // (r + 1) + 1))]
        self.size = len(pairs)
        self.slot = torch.tensor([r for r, _ in pairs], device=device)
        self.column = torch.tensor([s for _, s in pairs], device=device)
        # index_of[r, s] = position of the pair in the region, or `size` (a dummy) outside it or for an
        # absent token (s == tokens).
        self.index_of = torch.full((beam, tokens + 1), self.size, dtype=torch.long, device=device)
        self.index_of[self.slot, self.column] = torch.arange(self.size, device=device)
        self.token_ranks = torch.arange(tokens, device=device)[None, :]


class _Fusion:
    """Shallow fusion of an n-gram LM (pipeline/decoding/ngram.py): extending a prefix by token w from LM state s
    adds alpha * log P_LM(w | s) + beta to its path scores, as ctcdecode's scorer does for character LMs."""

    def __init__(self, lm, alpha: float, beta: float, device: torch.device, dtype: torch.dtype):
        self.lm, self.alpha, self.beta = lm, alpha, beta
        self.table = torch.as_tensor(lm.table, device=device).to(dtype).reshape(-1)

    def bonus(self, state: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        return self.alpha * self.table.take(state * self.lm.num_classes + token) + self.beta


class _Beams:
    """Beam state of the utterances (rows) x slots; all tensors (B, K), slots sorted best first."""

    def __init__(self, batch: int, beam: int, device: torch.device, dtype: torch.dtype, lm_start: int = 0):
        self.p_blank = torch.full((batch, beam), NEG_INF, device=device, dtype=dtype)
        self.p_blank[:, 0] = 0.0  # one live prefix: the empty one
        self.p_nonblank = torch.full((batch, beam), NEG_INF, device=device, dtype=dtype)
        self.last = torch.full((batch, beam), -1, device=device, dtype=torch.long)
        self.dead_hash = _dead_slot_hashes(batch, beam, device)
        self.hash = self.dead_hash.clone()
        self.hash[:, 0] = 0  # hash of the empty prefix
        self.parent_hash = torch.full((batch, beam), _NO_PARENT, device=device, dtype=torch.long)
        self.lm_state = torch.full((batch, beam), lm_start, device=device, dtype=torch.long)

    def total(self) -> torch.Tensor:
        return torch.logaddexp(self.p_blank, self.p_nonblank)


def _step(
    beams: _Beams,
    n: int,
    frame: torch.Tensor,
    blank_score: torch.Tensor,
    ext_tokens: torch.Tensor,
    ext_scores: torch.Tensor,
    region: _Region,
    fusion: _Fusion | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advance the first `n` utterances by one frame in place; return (source slot, emitted token or -1)."""
    p_blank, p_nonblank = beams.p_blank[:n], beams.p_nonblank[:n]
    last, prefix_hash, parent_hash = beams.last[:n], beams.hash[:n], beams.parent_hash[:n]
    beam = p_blank.shape[1]

    total = torch.logaddexp(p_blank, p_nonblank)
    last_score = frame.gather(1, last.clamp(min=0))
    stay_blank = total + blank_score[:, None]
    stay_nonblank = p_nonblank + last_score  # -inf for the empty prefix, whose p_nonblank is -inf

    # Slot j's prefix is also reached by extending its parent (prefix minus last token) if that is in the beam.
    has_parent, parent = (parent_hash[:, :, None] == prefix_hash[:, None, :]).max(dim=2)  # over slots i
    parent_ends_same = last.gather(1, parent) == last  # then only the parent's blank-ending paths extend
    parent_share = torch.where(parent_ends_same, p_blank.gather(1, parent), total.gather(1, parent))
    if fusion is not None:
        lm_state = beams.lm_state[:n]
        parent_share = parent_share + fusion.bonus(lm_state.gather(1, parent), last.clamp(min=0))
    stay_nonblank = torch.logaddexp(stay_nonblank, torch.where(has_parent, parent_share + last_score, NEG_INF))

    # Extensions (n, M) over the region; repeating the last token needs a blank between, so only p_blank feeds it.
    token = ext_tokens.index_select(1, region.column)
    repeats_last = token == last.index_select(1, region.slot)
    source_share = torch.where(repeats_last, p_blank.index_select(1, region.slot), total.index_select(1, region.slot))
    extend = source_share + ext_scores.index_select(1, region.column)
    if fusion is not None:
        extend = extend + fusion.bonus(lm_state.index_select(1, region.slot), token)
    # The parent's extension already merged into slot j's stay must not compete a second time: find its
    # (parent slot, token rank) in the region; absent pairs go to a dummy last column.
    token_rank = torch.full_like(frame, ext_tokens.shape[1], dtype=torch.long)
    token_rank.scatter_(1, ext_tokens, region.token_ranks.expand_as(ext_tokens))
    merged_at = region.index_of.take(parent * region.index_of.shape[1] + token_rank.gather(1, last.clamp(min=0)))
    merged_at = torch.where(has_parent, merged_at, region.size)
    extend = torch.cat([extend, extend.new_full((n, 1), NEG_INF)], dim=1).scatter_(1, merged_at, NEG_INF)[:, :-1]

    candidates = torch.cat([torch.logaddexp(stay_blank, stay_nonblank), extend], dim=1)
    best, chosen = candidates.topk(beam, dim=1)

    is_extension = chosen >= beam
    ext_index = (chosen - beam).clamp(min=0)
    stay_index = chosen.clamp(max=beam - 1)
    source = torch.where(is_extension, region.slot.take(ext_index), chosen)
    new_token = token.gather(1, ext_index)
    source_hash = prefix_hash.gather(1, source)
    alive = best > NEG_INF

    beams.p_blank[:n] = torch.where(is_extension, NEG_INF, stay_blank.gather(1, stay_index))
    beams.p_nonblank[:n] = torch.where(is_extension, extend.gather(1, ext_index), stay_nonblank.gather(1, stay_index))
    new_hash = torch.where(is_extension, _extend_hash(source_hash, new_token), source_hash)
    beams.hash[:n] = torch.where(alive, new_hash, beams.dead_hash[:n])
    new_parent_hash = torch.where(is_extension, source_hash, parent_hash.gather(1, source))
    beams.parent_hash[:n] = torch.where(alive, new_parent_hash, _NO_PARENT)
    beams.last[:n] = torch.where(is_extension, new_token, last.gather(1, source))
    if fusion is not None:
        source_state = lm_state.gather(1, source)
        beams.lm_state[:n] = torch.where(is_extension, fusion.lm.next_state(source_state, new_token), source_state)
    return source, torch.where(is_extension, new_token, -1)


def _backtrack(
    sources: torch.Tensor, emitted: torch.Tensor, active: list[int], ranks: int
) -> tuple[list[list[list[int]]], list[list[list[int]]]]:
    """Follow back-pointers from the best `ranks` final slots; sources/emitted are (T, B, K).
    Returns tokens and the frame each token was emitted at, both [utterance][rank]."""
    num_frames, batch, _ = sources.shape
    slot = torch.arange(ranks, device=sources.device).repeat(batch, 1)
    tokens = torch.full((batch, ranks, num_frames), -1, dtype=torch.int32, device=sources.device)
    for t in range(num_frames - 1, -1, -1):
        n = active[t]
        current = slot[:n]
        tokens[:n, :, t] = emitted[t, :n].gather(1, current)
        slot[:n] = sources[t, :n].gather(1, current).long()
    tokens = tokens.cpu().numpy()
    frames = np.arange(num_frames)
    return ([[row[row >= 0].tolist() for row in utterance] for utterance in tokens],
            [[frames[row >= 0].tolist() for row in utterance] for utterance in tokens])


def prune_classes(log_probs: torch.Tensor, cutoff_top_n: int | None, cutoff_prob: float = 1.0) -> torch.Tensor:
    """ctcdecode's per-frame vocabulary pruning: classes outside each frame's kept set (blank included) get -inf.

    Kept: the `cutoff_top_n` most probable classes, fewer when `cutoff_prob` < 1. ctcdecode 1.0.2 sums the kept
    probabilities in the log domain from log(1) = 0, so it stops once log(1 + Σp) >= cutoff_prob, i.e. when
    Σp >= e^cutoff_prob - 1 (cutoff_prob 0.5 keeps classes up to 64.9 % of the mass; 0.99 never stops early).
    Reproduced as is, so that the same arguments give the same answers.
    """
    num_classes = log_probs.shape[-1]
    top_n = min(cutoff_top_n or num_classes, num_classes)
    if top_n >= num_classes and cutoff_prob >= 1.0:
        return log_probs
    ordered, positions = log_probs.sort(dim=-1, descending=True)
    keep = torch.arange(num_classes, device=log_probs.device) < top_n
    if cutoff_prob < 1.0:
        mass = torch.log1p(ordered.double().exp().cumsum(dim=-1))
        # the class that crosses the threshold is kept: count the ones strictly before it, plus one
        crossed = torch.cat([torch.zeros_like(mass[..., :1], dtype=torch.bool), mass[..., :-1] >= cutoff_prob], -1)
        keep = keep & ~crossed.cummax(dim=-1).values
    pruned = torch.where(keep, ordered, NEG_INF)
    return torch.empty_like(log_probs).scatter_(-1, positions, pruned)


@dataclass
class BeamResult:
    """The final beams, best first: `tokens[b][r]`, the frame of each token's emission `frames[b][r]`, and
    `scores` (B, beam) log probs on CPU (-inf past the live prefixes, which are left out of the lists)."""

    tokens: list
    frames: list
    scores: torch.Tensor


@torch.no_grad()
def beam_search(
    log_probs: torch.Tensor,
    lengths: torch.Tensor,
    beam: int = 20,
    blank: int = 0,
    ranks: int | None = None,
    cutoff_top_n: int | None = None,
    cutoff_prob: float = 1.0,
    lm=None,
    alpha: float = 0.0,
    beta: float = 0.0,
) -> BeamResult:
    """The search itself, on log_probs' device; `ranks` final prefixes per utterance (default: the whole beam).
    With `lm` (an ngram.NgramLM) every extension also scores alpha * log P_LM + beta, and the scores include them.

    With the default cutoffs it is exact: the same beams as a search over every class (the module docstring).
    `cutoff_top_n` / `cutoff_prob` prune each frame's classes as ctcdecode does (`prune_classes`): a
    speed/quality trade; without an LM it is faster only when cutoff_top_n < beam + 1.
    """
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    batch, _, num_classes = log_probs.shape
    if num_classes < 2:
        raise ValueError("CTC needs at least one class besides blank")
    ranks = beam if ranks is None else min(ranks, beam)
    dtype = log_probs.dtype if log_probs.dtype in (torch.float32, torch.float64) else torch.float32
    device = log_probs.device
    if batch == 0:
        return BeamResult([], [], torch.empty((0, beam), dtype=dtype))
    lengths = lengths.to(device=device, dtype=torch.long)
    max_frames = int(lengths.max().item())
    order = torch.argsort(lengths, descending=True, stable=True)
    # active[t] = number of utterances longer than t; they are the first rows once sorted.
    active = (lengths[order][None, :] > torch.arange(max_frames, device=device)[:, None]).sum(dim=1).tolist()

    frames = log_probs[order, :max_frames].to(dtype)
    frames = prune_classes(frames, cutoff_top_n, cutoff_prob).transpose(0, 1).contiguous()  # (T, B, C)
    fusion = None
    if lm is not None:
        if lm.num_classes != num_classes or lm.blank != blank:
            raise ValueError(f"the LM is over {lm.num_classes} classes with blank {lm.blank}, the log-probs have "
                             f"{num_classes} with blank {blank}")
        fusion = _Fusion(lm, alpha, beta, device, dtype)
    tokens_per_frame = min(num_classes - 1 if fusion else beam + 1, num_classes - 1, cutoff_top_n or num_classes)
    ext_tokens, ext_scores = _sorted_extension_tokens(frames, blank, tokens_per_frame)
    blank_scores = frames[:, :, blank]
    region = _Region(beam, tokens_per_frame, device, full=fusion is not None)
    beams = _Beams(batch, beam, device, dtype, lm.start_state if fusion else 0)
    sources = torch.zeros((max_frames, batch, beam), dtype=torch.int32, device=device)
    emitted = torch.full((max_frames, batch, beam), -1, dtype=torch.int32, device=device)
    for t in range(max_frames):
        n = active[t]
        source, token = _step(
            beams, n, frames[t, :n], blank_scores[t, :n], ext_tokens[t, :n], ext_scores[t, :n], region, fusion
        )
        sources[t, :n] = source
        emitted[t, :n] = token.to(torch.int32)

    sorted_scores = beams.total().cpu()  # slots stay sorted best first
    sorted_tokens, sorted_frames = _backtrack(sources, emitted, active, ranks)
    tokens: list[list[list[int]]] = [[] for _ in range(batch)]
    emission: list[list[list[int]]] = [[] for _ in range(batch)]
    for position, utterance in enumerate(order.tolist()):
        live = max(int((sorted_scores[position, :ranks] > NEG_INF).sum()), 1)
        tokens[utterance] = sorted_tokens[position][:live]
        emission[utterance] = sorted_frames[position][:live]
    scores = torch.empty_like(sorted_scores)
    scores[order.cpu()] = sorted_scores
    return BeamResult(tokens, emission, scores)


def prefix_beam_search_nbest(
    log_probs: torch.Tensor,
    lengths: torch.Tensor,
    beam: int = 20,
    blank: int = 0,
    cutoff_top_n: int | None = None,
) -> tuple[list[list[list[int]]], torch.Tensor]:
    """The final beam of every utterance, best first: hypotheses [utterance][rank] and beam scores (B, beam).

    Scores are log probs (float32/64 like the input, on CPU); ranks past the live prefixes score -inf and
    are left out of the lists.
    """
    result = beam_search(log_probs, lengths, beam, blank, cutoff_top_n=cutoff_top_n)
    return result.tokens, result.scores


def prefix_beam_search(
    log_probs: torch.Tensor,
    lengths: torch.Tensor,
    beam: int = 20,
    blank: int = 0,
    cutoff_top_n: int | None = None,
) -> tuple[list[list[int]], torch.Tensor]:
    """Best label sequence per utterance and its beam score (log prob, on CPU)."""
    result = beam_search(log_probs, lengths, beam, blank, ranks=1, cutoff_top_n=cutoff_top_n)
    return [hypotheses[0] for hypotheses in result.tokens], result.scores[:, 0]
