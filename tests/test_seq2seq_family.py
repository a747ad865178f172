"""hw4p2 parts: teacher-forcing schedules, memory-aware batches, padding masks, beam 1 == greedy, recipe errors,
vocabularies, and a tiny LAS that overfits 8 utterances on CPU."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.config import ConfigError, load_recipe
from pipeline.decoding.attention_search import beam_search, greedy_search
from pipeline.models.las import LAS, reverse_within_length
from pipeline.models.transformer import Transformer
from pipeline.tasks.seq2seq_recipe import LASConfig, Seq2SeqTrainConfig, TeacherForcingConfig, TransformerConfig, \
    output_symbols, special_tokens
from pipeline.tasks.profiles import HW4P2_VOCAB
from pipeline.training.batching import Seq2SeqCollate, epoch_batches, oversized, padded_size
from pipeline.training.seq2seq import guided_attention_loss, oom_message, seq2seq_loss
from pipeline.training.teacher_forcing import rates

torch.set_num_threads(1)
VOCAB = dict(input_dim=12, vocab_size=31, pad=0, sos=1, eos=2, output_tokens=list(range(3, 31)))
TINY_LAS = LASConfig(**VOCAB, embed_channels=16, listener_hidden=16, pblstm_layers=2, key_value_size=16,
                     embedding_size=16, speller_hidden=32, speller_layers=1, locked_dropout=0.0, speller_dropout=0.0)
TINY_TRANSFORMER = TransformerConfig(**VOCAB, conv_channels=8, d_model=32, heads=2, encoder_layers=2, decoder_layers=2,
                                     d_ff=64, dropout=0.0)


# ---- teacher forcing --------------------------------------------------------------------------------------------

def test_constant_schedule_never_moves():
    assert rates(TeacherForcingConfig(schedule="constant", start=0.9), 30, [1.0] * 30) == [0.9] * 30


def test_linear_schedule_steps_every_n_epochs_down_to_the_floor():
    cfg = TeacherForcingConfig(schedule="linear", start=1.0, step=0.1, every=20, floor=0.4, until_epoch=80)
    got = rates(cfg, 120)
    assert got[:20] == [1.0] * 20                        # epochs 1..20 at 1.0, first step after epoch 20
    assert got[20] == pytest.approx(0.9) and got[40] == pytest.approx(0.8) and got[60] == pytest.approx(0.7)
    assert got[80] == pytest.approx(0.6) and got[119] == pytest.approx(0.6)   # no steps after until_epoch=80
    floor = rates(TeacherForcingConfig(schedule="linear", start=0.55, step=0.1, every=1, floor=0.4,
                                       until_epoch=None), 5)
    assert floor == pytest.approx([0.55, 0.45, 0.4, 0.4, 0.4])


def test_decay_schedule_starts_at_the_dev_distance_threshold_or_epoch():
    cfg = TeacherForcingConfig(schedule="decay", start=1.0, factor=0.985, floor=0.6, dist_threshold=30.0,
                               after_epoch=20)
    dists = [50.0, 40.0, 29.0, 35.0, 28.0]
    got = rates(cfg, 5, dists)
    assert got[:3] == [1.0, 1.0, 1.0]                      # threshold first met after epoch 3
    assert got[3] == pytest.approx(0.985) and got[4] == pytest.approx(0.985)   # epoch 4's 35 does not trigger
    late = rates(cfg, 23, [100.0] * 23)                    # never good enough: decay only after epoch 20
    assert late[20] == 1.0 and late[21] == pytest.approx(0.985) and late[22] == pytest.approx(0.985 ** 2)
    floor = rates(TeacherForcingConfig(schedule="decay", start=0.61, factor=0.5, floor=0.6, after_epoch=0), 3)
    assert floor == pytest.approx([0.61, 0.6, 0.6])


# ---- memory-aware batches -----------------------------------------------------------------------------------------

def test_batches_respect_frame_token_and_count_budgets():
    rng = np.random.default_rng(0)
    frames = rng.integers(100, 3500, 2000)
    tokens = (frames / 6).astype(int) + 1  # + <eos>
    plan = epoch_batches(frames, 32, max_frames=20000, tokens=tokens, max_tokens=3000, seed=1, epoch=3)
    assert sorted(i for b in plan for i in b) == list(range(2000))
    for batch in plan:
        padded_frames, padded_tokens = padded_size(batch, frames, tokens)
        assert padded_frames <= 20000 and padded_tokens <= 3000 and len(batch) <= 32
    assert plan == epoch_batches(frames, 32, 20000, tokens, 3000, seed=1, epoch=3)          # resumable
    assert plan != epoch_batches(frames, 32, 20000, tokens, 3000, seed=1, epoch=4)          # reshuffled


def test_an_oversized_utterance_gets_a_batch_of_its_own():
    frames, tokens = np.array([100, 5000, 120, 90]), np.array([10, 20, 12, 9])
    plan = epoch_batches(frames, 8, max_frames=1000, tokens=tokens, max_tokens=500, shuffle=False)
    assert [1] in plan and oversized(frames, tokens, 1000, 500) == [1]


def test_collate_builds_shifted_targets_padded_with_pad():
    x, x_lengths, y_in, y_out, y, y_lengths = Seq2SeqCollate(0, 1, 2)(
        [(torch.zeros(5, 3), torch.tensor([7, 8, 9])), (torch.zeros(4, 3), torch.tensor([5]))])
    assert y_in.tolist() == [[1, 7, 8, 9], [1, 5, 0, 0]] and y_out.tolist() == [[7, 8, 9, 2], [5, 2, 0, 0]]
    assert x_lengths.tolist() == [5, 4] and y_lengths.tolist() == [3, 1]


def test_guided_attention_penalizes_off_diagonal_mass_and_ignores_padding():
    steps = frames = 6                                   # output step n attends frame n: exactly on the diagonal
    diagonal = torch.eye(steps)
    last_frame = torch.zeros(steps, frames)
    last_frame[:, -1] = 1.0
    one = lambda a: guided_attention_loss(a[None], torch.tensor([steps]), torch.tensor([frames]), sigma=0.2)
    assert one(diagonal).item() == pytest.approx(0.0, abs=1e-6)
    assert one(last_frame).item() > 0.4
    # padding: a batch mate twice as long; the short utterance's padded steps/frames carry junk mass
    padded = torch.zeros(2, 2 * steps, 2 * frames)
    padded[0, :steps, :frames] = diagonal
    padded[0, steps:, :] = 1.0 / (2 * frames)            # steps past <eos>: must not count
    padded[1] = torch.eye(2 * steps)
    penalty = guided_attention_loss(padded, torch.tensor([steps, 2 * steps]), torch.tensor([frames, 2 * frames]), 0.2)
    assert penalty.item() == pytest.approx(0.0, abs=1e-6)
    padded[0, :steps, frames:] = 1.0                     # mass on padded frames (masked to 0 by the model) is ignored
    penalty = guided_attention_loss(padded, torch.tensor([steps, 2 * steps]), torch.tensor([frames, 2 * frames]), 0.2)
    assert penalty.item() == pytest.approx(0.0, abs=1e-6)


def test_oom_message_names_the_budget_to_lower():
    batch = Seq2SeqCollate(0, 1, 2)([(torch.zeros(50, 3), torch.tensor([3, 4]))] * 4)
    message = oom_message(batch, Seq2SeqTrainConfig(max_frames_per_batch=200, max_tokens_per_batch=1000))
    assert "lower train.max_frames_per_batch (now 200)" in message and "\n" not in message


# ---- masks, search --------------------------------------------------------------------------------------------------

def padded_pair(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([37, 21, 30])
    x = torch.randn(3, 37, 12, generator=gen)
    x_noisy = x.clone()
    for b, n in enumerate(lengths):
        x[b, n:] = 0.0
        x_noisy[b, n:] = 100.0 * torch.randn(37 - n, 12, generator=gen)
    return x, x_noisy, lengths


def test_reverse_within_length_keeps_padding_in_place():
    x = torch.arange(10.0).reshape(2, 5, 1)
    out = reverse_within_length(x, torch.tensor([3, 5]))[..., 0]
    assert out.tolist() == [[2, 1, 0, 3, 4], [9, 8, 7, 6, 5]]


@pytest.mark.parametrize("model_cls, cfg", [(LAS, TINY_LAS), (Transformer, TINY_TRANSFORMER),
                                            (LAS, TINY_LAS.model_copy(update={"attention_heads": 4, "embed": "none"}))])
def test_padded_frames_do_not_change_outputs(model_cls, cfg):
    torch.manual_seed(0)
    model = model_cls(cfg).eval()
    x, x_noisy, lengths = padded_pair()
    y_in = torch.tensor([[1, 5, 6, 7], [1, 8, 0, 0], [1, 9, 10, 0]])
    with torch.no_grad():
        clean, noisy = model(x, lengths, y_in), model(x_noisy, lengths, y_in)
    assert torch.allclose(clean["logits"], noisy["logits"], atol=1e-5)
    real = clean["memory_mask"]
    assert clean["attention"].masked_select(~real[:, None, :].expand_as(clean["attention"])).abs().max() == 0
    assert greedy_search(model, x, lengths, 10) == greedy_search(model, x_noisy, lengths, 10)


@pytest.mark.parametrize("model_cls, cfg", [(LAS, TINY_LAS), (Transformer, TINY_TRANSFORMER)])
def test_beam_of_one_is_greedy(model_cls, cfg):
    torch.manual_seed(1)
    model = model_cls(cfg).eval()
    x, _, lengths = padded_pair(1)
    greedy = greedy_search(model, x, lengths, 15)
    beam = [nbest[0][1] for nbest in beam_search(model, x, lengths, beam=1, max_length=15, alpha=1.0)]
    assert beam == greedy


def test_beam_search_scores_are_sorted_and_emit_only_output_characters():
    torch.manual_seed(2)
    model = LAS(TINY_LAS).eval()
    x, _, lengths = padded_pair(2)
    for nbest in beam_search(model, x, lengths, beam=4, max_length=12, alpha=0.7):
        scores = [s for s, _ in nbest]
        assert scores == sorted(scores, reverse=True) and len(nbest) >= 1
        assert all(3 <= t < 31 for _, tokens in nbest for t in tokens)


# ---- recipe and vocabularies ---------------------------------------------------------------------------------------

def test_a_resolved_recipe_validates_again_and_leaves_the_profile_keys_to_the_profile():
    from pipeline.tasks.seq2seq_recipe import PROFILE_KEYS, Seq2SeqModelConfig

    resolved = load_recipe("hw4p2", "demo")["model"]
    assert not set(PROFILE_KEYS) & set(resolved)
    assert Seq2SeqModelConfig.model_validate(resolved).model_dump(mode="json") == resolved


@pytest.mark.parametrize("override, message", [
    ("model.listener_hiden=3", "model.listener_hiden: unknown key for arch las (did you mean model.listener_hidden?)"),
    ("model.arch=rnn", "model.arch: arch must be one of: las, transformer"),
    ("model.vocab_size=40", "model.vocab_size: vocab_size is set from the competition profile (feature dim, "
                            "vocabulary); remove model.vocab_size from the recipe (got 40)"),
    ("model.input_dim=80", "model.input_dim: input_dim is set from the competition profile"),
    ("decode.beam=0", "decode.beam"),
])
def test_bad_recipe_values_are_one_line(override, message):
    with pytest.raises(ConfigError) as error:
        load_recipe("hw4p2", "demo", (override,))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_every_shipped_recipe_loads():
    for name in ("demo", "default", "seed001-las", "transformer-ctc", "tiny"):
        recipe = load_recipe("hw4p2", name)
        assert recipe["model"]["arch"] in ("las", "transformer") and recipe["decode"]["beam"] >= 1


def test_special_tokens_follow_each_semesters_vocabulary():
    assert special_tokens(HW4P2_VOCAB) == {"pad": 0, "sos": 1, "eos": 2, "vocab_size": 31}
    s22 = ["<sos>"] + [chr(c) for c in range(65, 91)] + ["'", " ", "<eos>"]
    assert special_tokens(s22) == {"pad": 30, "sos": 0, "eos": 29, "vocab_size": 31}   # pad appended
    f24 = ["<|endoftext|>", "<|padding|>", "<|unknown|>"] + [chr(c) for c in range(65, 91)] + [" ", "'"]
    assert special_tokens(f24) == {"pad": 1, "sos": 0, "eos": 0, "vocab_size": 31}
    assert output_symbols(f24) == list(range(3, 31)) and output_symbols(HW4P2_VOCAB) == list(range(3, 31))


# ---- a tiny LAS learns -----------------------------------------------------------------------------------------------

def synthetic_utterances(n: int, seed: int = 0):
    """Each character is a fixed random 12-d pattern held for 4–6 frames (+ noise): an alignment to find."""
    rng = np.random.default_rng(seed)
    patterns = rng.normal(0, 1, (31, 12)).astype(np.float32)
    data = []
    for _ in range(n):
        chars = rng.integers(3, 31, rng.integers(4, 8))
        frames = np.concatenate([np.repeat(patterns[c][None], rng.integers(4, 7), 0) for c in chars])
        data.append((torch.from_numpy(frames + rng.normal(0, 0.1, frames.shape).astype(np.float32)),
                     torch.from_numpy(chars.astype(np.int64))))
    return data


def test_tiny_las_overfits_eight_utterances():
    import Levenshtein

    torch.manual_seed(0)
    cfg = LASConfig(**VOCAB, embed_channels=32, listener_hidden=32, pblstm_layers=1, key_value_size=32,
                    embedding_size=32, speller_hidden=64, speller_layers=1, locked_dropout=0.0, speller_dropout=0.0)
    model = LAS(cfg)
    x, x_lengths, y_in, y_out, y, y_lengths = Seq2SeqCollate(0, 1, 2)(synthetic_utterances(8))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    train_cfg = Seq2SeqTrainConfig()
    for _ in range(150):
        loss, _ = seq2seq_loss(model(x, x_lengths, y_in), y_out, y, y_lengths, cfg, train_cfg)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    hyps = greedy_search(model, x, x_lengths, 20)
    refs = [row[:n].tolist() for row, n in zip(y, y_lengths)]
    distance = np.mean([Levenshtein.distance(r, h) for r, h in zip(refs, hyps)])
    assert distance <= 0.25, (distance, refs, hyps)
