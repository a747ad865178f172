"""Joint CTC/attention decoding for hw4p2 (decode.ctc_weight, decode.length_bonus, decode.mode=ctc_greedy).

    .venv/bin/python -m pytest tests/test_joint_ctc_attention.py -q
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pipeline.decoding.attention_search import beam_search, ctc_greedy_search, greedy_search
from pipeline.decoding.ctc_greedy import greedy_decode
from pipeline.decoding.ctc_prefix_score import CTCPrefixScorer
from pipeline.models.las import LAS
from pipeline.models.transformer import Transformer
from tests.test_seq2seq_family import TINY_LAS, TINY_TRANSFORMER

torch.set_num_threads(1)
BLANK, EOS = 0, 6


def attention_log_p(model, x: torch.Tensor, lengths: torch.Tensor, b: int, tokens: list[int], ended: bool) -> float:
    """Teacher-forced attention log P of `tokens` (+ <eos> when ended) for utterance b, padded as in the batch."""
    cfg = model.cfg
    with torch.no_grad():
        logits = model(x[b : b + 1], lengths[b : b + 1], torch.tensor([[cfg.sos, *tokens]]))["logits"].float()
    allowed = torch.zeros(cfg.vocab_size, dtype=torch.bool)
    allowed[[*cfg.output_tokens, cfg.eos]] = True
    log_p = logits.masked_fill(~allowed, float("-inf")).log_softmax(-1)[0]
    steps = [*tokens, cfg.eos] if ended else tokens
    return float(log_p[torch.arange(len(steps)), torch.tensor(steps)].sum())


def prefix_scores(log_probs: torch.Tensor, lengths: torch.Tensor, b: int, tokens: list[int]) -> list[torch.Tensor]:
    """psi (V,) after each prefix of `tokens` for utterance b, extending one token at a time."""
    scorer = CTCPrefixScorer(log_probs, lengths, BLANK, EOS)
    state = scorer.initial(torch.tensor([b]))
    out = []
    for token in [*tokens, None]:
        psi, extended = scorer.extend(state)
        out.append(psi[0])
        if token is not None:
            state = CTCPrefixScorer.select(extended, torch.tensor([0]), torch.tensor([token]), state)
    return out


def test_prefix_score_of_a_whole_hypothesis_is_its_ctc_probability():
    g = torch.Generator().manual_seed(0)
    log_probs = torch.randn(3, 25, 7, generator=g).log_softmax(-1)
    lengths = torch.tensor([25, 18, 9])
    for b, tokens in enumerate([[1, 2, 2, 3], [4, 1, 5], [3, 3]]):
        psi_eos = prefix_scores(log_probs, lengths, b, tokens)[-1][EOS]
        loss = F.ctc_loss(log_probs[b : b + 1, : lengths[b]].transpose(0, 1), torch.tensor([tokens]),
                          lengths[b : b + 1], torch.tensor([len(tokens)]), blank=BLANK, reduction="sum")
        assert float(psi_eos) == pytest.approx(-float(loss), abs=1e-4)


def test_prefix_score_sums_every_continuation():
    """psi(g + c) = P(exactly g + c) + P(every longer sequence starting with g + c): brute force on 4 frames."""
    import itertools

    log_probs = torch.randn(1, 4, 7, generator=torch.Generator().manual_seed(1)).log_softmax(-1)
    lengths = torch.tensor([4])
    psi = prefix_scores(log_probs, lengths, 0, [2])[-1]
    for c in (1, 2, 3):
        total = torch.tensor(float("-inf"))
        for path in itertools.product(range(7), repeat=4):  # every alignment over all 7 classes
            collapsed = [k for i, k in enumerate(path) if k != BLANK and (i == 0 or path[i - 1] != k)]
            if collapsed[:2] == [2, c]:
                total = torch.logaddexp(total, log_probs[0, torch.arange(4), torch.tensor(path)].sum())
        assert float(psi[c]) == pytest.approx(float(total), abs=1e-4)


@pytest.mark.parametrize("make", [lambda: LAS(TINY_LAS.model_copy(update={"ctc_head": True})),
                                  lambda: Transformer(TINY_TRANSFORMER)], ids=["las", "transformer"])
def test_weight_zero_is_the_attention_search_and_one_is_ctc_greedy(make):
    torch.manual_seed(0)
    model = make().eval()
    x, lengths = torch.randn(3, 40, 12), torch.tensor([40, 33, 25])
    # λ = 0: beam 1 is greedy; scores are attention log P / length^alpha (teacher-forced check)
    assert [n[0][1] for n in beam_search(model, x, lengths, 1, 20, ctc_weight=0.0)] == \
        greedy_search(model, x, lengths, 20)
    nbest = beam_search(model, x, lengths, 3, 20, alpha=1.0, ctc_weight=0.0)
    cfg = model.cfg
    for b, hypotheses in enumerate(nbest):
        score, tokens = hypotheses[0]
        ended = len(tokens) < 20  # else max_length cut it: no <eos> term, length 20
        total = attention_log_p(model, x, lengths, b, tokens, ended)
        assert score == pytest.approx(total / (len(tokens) + ended), abs=1e-4)
    # λ = 1, beam 1, with a confident (peaky) CTC head: the CTC best path
    emittable = torch.zeros(cfg.vocab_size, dtype=torch.bool)
    emittable[[*cfg.output_tokens, cfg.pad]] = True
    with torch.no_grad():  # like a trained head: confident, and never sos/eos (CTC targets hold neither)
        head = model.ctc if hasattr(model, "ctc") else model.listener.ctc
        head.weight.mul_(2000.0)
        head.bias[~emittable] = -1e4
    joint = [n[0][1] for n in beam_search(model, x, lengths, 1, 60, ctc_weight=1.0)]
    assert joint == ctc_greedy_search(model, x, lengths)
    memory = model.encode(x, lengths)
    assert all(token in cfg.output_tokens for hypothesis in joint for token in hypothesis)
    best_path = greedy_decode(memory["ctc_log_probs"].masked_fill(~emittable, float("-inf")), memory["lengths"],
                              blank=cfg.pad)
    assert any(joint) and joint == best_path


@torch.no_grad()
def test_joint_scores_weigh_attention_and_ctc():
    torch.manual_seed(1)
    model = Transformer(TINY_TRANSFORMER).eval()
    x, lengths = torch.randn(2, 30, 12), torch.tensor([30, 22])
    weight, bonus = 0.4, 0.3
    nbest = beam_search(model, x, lengths, 4, 40, alpha=0.0, ctc_weight=weight, length_bonus=bonus)
    memory = model.encode(x, lengths)
    cfg = model.cfg
    for b, hypotheses in enumerate(nbest):
        score, tokens = hypotheses[0]
        att = attention_log_p(model, x, lengths, b, tokens, ended=True)
        ctc = -F.ctc_loss(memory["ctc_log_probs"][b : b + 1, : memory["lengths"][b]].transpose(0, 1),
                          torch.tensor([tokens]), memory["lengths"][b : b + 1], torch.tensor([len(tokens)]),
                          blank=cfg.pad, reduction="sum")
        expected = (1 - weight) * att + weight * ctc + bonus * (len(tokens) + 1)
        assert score == pytest.approx(float(expected), abs=1e-3)


def test_joint_decoding_needs_a_ctc_head():
    model = LAS(TINY_LAS).eval()
    with pytest.raises(ValueError, match="needs a model with a CTC head"):
        beam_search(model, torch.randn(1, 20, 12), torch.tensor([20]), 2, 5, ctc_weight=0.3)


def test_repeated_phrases_are_counted():
    from pipeline.decoding.metrics import has_repeated_phrase, repeated_phrases

    assert has_repeated_phrase("OF THE PRIORESS EXCELLENCY OF THE PRIORESS EXCELLENCY")
    assert has_repeated_phrase("SHE SAID THE DOG THE DOG RAN")
    assert not has_repeated_phrase("THE DOG AND THE CAT")          # a word again, not a phrase in a row
    assert not has_repeated_phrase("THAT THAT IS")                  # one word doubled: min_words is 2
    assert repeated_phrases(["A B A B", "A B C", "X Y Z X Y Z"]) == 2


# ---- in the decode stage -----------------------------------------------------------------------------------

from tests.test_pipeline_contract import finished_fixture, variant  # noqa: E402

finished = finished_fixture("demo-hw4p2")


def test_decode_stage_modes_get_their_own_folders(finished):
    _, _, pipeline = finished
    assert "ctc_weight" not in pipeline.plan["decode"].params  # off: the decode key is what it was
    metrics = pipeline.plan["decode"].artifact.manifest["metrics"]
    assert {"dev_repeated_phrases", "test_repeated_phrases"} <= set(metrics)
    _, joint = variant(finished, "model.ctc_head=true", "train.ctc_weight=0.3", "decode.ctc_weight=0.3",
                       "decode.length_bonus=0.5", stop="decode")
    assert joint.plan["decode"].dir.name.endswith(f"-ctc0.3-lb0.5-{joint.plan['decode'].key[:8]}")
    assert "dev_beam" in joint.plan["decode"].artifact.manifest["metrics"]
    _, greedy = variant(finished, "model.ctc_head=true", "train.ctc_weight=0.3", "decode.mode=ctc_greedy",
                        start="decode", stop="decode")
    assert greedy.plan["decode"].dir.name.startswith("ctc-greedy-")


def test_ctc_decoding_of_a_model_without_a_ctc_head_is_one_line(finished):
    from pipeline.engine import EngineError

    with pytest.raises(EngineError, match="needs a model with a CTC head") as error:
        variant(finished, "model.ctc_head=false", "decode.ctc_weight=0.5", stop="decode")
    assert "\n" not in str(error.value)
