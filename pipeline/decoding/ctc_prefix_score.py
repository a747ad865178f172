"""CTC prefix scores for attention beam search (joint CTC/attention decoding, Watanabe et al. 2017; ESPnet's
CTCPrefixScore), vectorized over hypotheses and the whole vocabulary:

    scorer = CTCPrefixScorer(ctc_log_probs, lengths, blank, eos)      # (B, T, V) encoder CTC log-probs
    state = scorer.initial(rows)                          # rows (N,): which utterance each hypothesis decodes
    psi, extended = scorer.extend(state)                  # psi (N, V): log P_ctc(prefix + c ...) for every c
    state = CTCPrefixScorer.select(extended, sources, tokens, state)   # the kept hypotheses sources[i] + tokens[i]

psi(g + c) is the CTC probability of every label sequence that starts with g + c (a prefix probability); for
c = eos it is the probability of exactly g (the whole utterance), which equals exp(-ctc_loss(g)).
Per hypothesis the state is r (T, 2): the log probability of having emitted g by frame t, ending in a non-blank
(r[:, 0]) or a blank (r[:, 1]).
"""
from __future__ import annotations

import torch

NEG_INF = float("-inf")


class CTCPrefixScorer:
    def __init__(self, log_probs: torch.Tensor, lengths: torch.Tensor, blank: int, eos: int):
        self.x = log_probs.float().transpose(0, 1)          # (T, B, V)
        self.lengths = lengths.to(log_probs.device).long()
        self.blank, self.eos = blank, eos
        frames = torch.arange(self.x.shape[0], device=log_probs.device)
        self.valid = frames[:, None] < self.lengths[None, :]  # (T, B)

    def initial(self, rows: torch.Tensor) -> dict:
        """State of the empty prefix for hypotheses of utterances `rows` (N,)."""
        blank = self.x[:, rows, self.blank]                  # (T, N)
        r = torch.stack([torch.full_like(blank, NEG_INF), blank.cumsum(dim=0)], dim=-1)  # (T, N, 2)
        return {"rows": rows, "r": r, "last": torch.full_like(rows, -1), "empty": torch.ones_like(rows, dtype=torch.bool)}

    def extend(self, state: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """psi (N, V) for every one-token extension, and the extended r (T, N, V, 2)."""
        rows, r, last = state["rows"], state["r"], state["last"]
        x = self.x[:, rows]                                  # (T, N, V)
        T, N, V = x.shape
        total = torch.logaddexp(r[..., 0], r[..., 1])        # (T, N)
        # phi[t]: paths for g that end by frame t and may be followed by c at t+1 (no repeat without a blank)
        phi = total[:, :, None].expand(T, N, V).clone()
        same = torch.arange(V, device=x.device)[None, :] == last[:, None]       # (N, V)
        phi[:, same] = r[..., 1][:, :, None].expand(T, N, V)[:, same]
        new_n = torch.full((T, N, V), NEG_INF, device=x.device)
        new_b = torch.full((T, N, V), NEG_INF, device=x.device)
        new_n[0] = torch.where(state["empty"][:, None], x[0], torch.full_like(x[0], NEG_INF))
        for t in range(1, T):
            new_n[t] = torch.logaddexp(new_n[t - 1], phi[t - 1]) + x[t]
            new_b[t] = torch.logaddexp(new_b[t - 1], new_n[t - 1]) + x[t, :, self.blank][:, None]
        valid = self.valid[:, rows]                          # (T, N)
        starts = torch.cat([new_n[:1], phi[:-1] + x[1:]], dim=0)   # the frame c is first emitted at
        psi = torch.logsumexp(starts.masked_fill(~valid[:, :, None], NEG_INF), dim=0)
        last_frame = (self.lengths[rows] - 1).clamp(min=0)
        psi[:, self.eos] = total.gather(0, last_frame[None, :])[0]  # the whole utterance is exactly g
        psi[:, self.blank] = NEG_INF
        return psi, torch.stack([new_n, new_b], dim=-1)

    @staticmethod
    def select(extended: torch.Tensor, sources: torch.Tensor, tokens: torch.Tensor, state: dict) -> dict:
        """The state of hypotheses sources[i] + tokens[i] (extended: (T, N, V, 2) from extend)."""
        r = extended[:, sources, tokens]                     # (T, K, 2)
        return {"rows": state["rows"][sources], "r": r, "last": tokens,
                "empty": torch.zeros_like(tokens, dtype=torch.bool)}
