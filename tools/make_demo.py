"""Generate the embedded demo competitions (demo-hw1p2, demo-hw3p2, demo-hw4p2) under pipeline/demo_data/.

Regenerate (from the repository root; needs Debian's espeak-ng and the `demo-gen` extra):

    apt-get update && apt-get install -y espeak-ng libespeak-ng-dev
    .venv/bin/pip install -e '.[demo-gen]'
    .venv/bin/python tools/make_demo.py

The output is deterministic (seeded; fixed zip timestamps), so re-running reproduces the committed zips
byte for byte on the same espeak-ng / librosa versions. Speech is synthesized by libespeak-ng with phoneme
events (exact phoneme start samples -> exact 10 ms frame labels), with several accents, voice variants,
speaking rates, pitches and noise levels; dev and test use voice variants that never occur in train.
All three demos share the same utterances (as the course's hw1p2/hw3p2 share LibriSpeech audio).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import random
import sys
import time
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import demo_sentences  # noqa: E402
import demo_speech  # noqa: E402
from demo_speech import SILENCE, Voice  # noqa: E402
from pipeline.tasks.profiles import HW3P2_PHONEME_TO_CHAR  # noqa: E402

# --- configuration ------------------------------------------------------------------------------------
SEED = 11785
REPO_ROOT = Path(__file__).resolve().parent.parent
OUTPUT_DIR = REPO_ROOT / "pipeline" / "demo_data"
REGENERATE_COMMAND = ".venv/bin/python tools/make_demo.py"

# Accents (eSpeak language voices). Scottish (rhotic vowels followed by an explicit r) and Caribbean
# (TH-stopping) are left out: their mnemonics do not map onto CMUdict-style labels without double Rs.
ACCENTS = ["en-us", "en-us-nyc", "en", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd"]
# Voice variants ("!v" files); a speaker = accent + variant. Variants are disjoint across splits.
SPLIT_VARIANTS = {
    "train-clean-100": ["m1", "m2", "m3", "m4", "m7", "m8", "f1", "f2", "f3"],
    "dev-clean": ["m5", "f4"],
    "test-clean": ["m6", "f5"],
}
UTTERANCES_PER_SPLIT = {"train-clean-100": 400, "dev-clean": 60, "test-clean": 60}
MIN_SECONDS, MAX_SECONDS = 1.5, 3.5
RATE_WPM = (140, 210)  # per utterance, around the speaker's own rate
SPEAKER_RATE_WPM = (150, 195)
PITCH = (30, 70)
PITCH_RANGE = (25, 75)
LEAD_SILENCE_SECONDS = (0.08, 0.30)  # padded before/after the speech (LibriSpeech-like [SIL] frames)
SNR_DB_CHOICES = [None, 30.0, 20.0, 15.0, 10.0]  # None = clean
MFCC_MANTISSA_BITS = 10  # float32 kept (float16-level precision), low mantissa bits zeroed so deflate can shrink the zips

COMPETITIONS = ["demo-hw1p2", "demo-hw3p2", "demo-hw4p2"]
SPLITS = list(UTTERANCES_PER_SPLIT)
ZIP_TIMESTAMP = (2024, 1, 1, 0, 0, 0)

# F22+ HW3P2 starter map (index 0 = CTC blank, never in labels), shared with the pipeline.
CMUDICT_ARPABET = HW3P2_PHONEME_TO_CHAR
PHONEMES = [p for p in CMUDICT_ARPABET if p]  # 40 classes incl. [SIL]
HW4P2_CHARACTERS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZ' ")


@dataclass(frozen=True)
class Speaker:
    speaker_id: int
    chapter_id: int
    accent: str
    variant: str
    split: str
    rate_wpm: int

    @property
    def voice_name(self) -> str:
        return f"{self.accent}+{self.variant}"


@dataclass
class Utterance:
    utterance_id: str
    text: str
    speaker: Speaker
    voice: Voice
    snr_db: float | None
    features: np.ndarray  # (T, 28) float32
    frame_phonemes: list[str]  # length T
    phoneme_sequence: list[str]  # [SIL] ... [SIL]
    espeak_phonemes: Counter = field(default_factory=Counter)

    @property
    def num_frames(self) -> int:
        return self.features.shape[0]


# --- speakers and utterances --------------------------------------------------------------------------
def make_speakers(rng: random.Random) -> list[Speaker]:
    """One speaker (LibriSpeech-style id and one chapter) per accent x variant, split by variant."""
    combos = [(split, accent, variant) for split, variants in SPLIT_VARIANTS.items()
              for variant in variants for accent in ACCENTS]
    speaker_ids = sorted(rng.sample(range(19, 9000), len(combos)))
    rng.shuffle(speaker_ids)
    speakers = []
    for speaker_id, (split, accent, variant) in zip(speaker_ids, combos):
        speakers.append(Speaker(speaker_id, rng.randrange(1000, 300000), accent, variant, split,
                                rng.randint(*SPEAKER_RATE_WPM)))
    return speakers


def utterance_voice(speaker: Speaker, rng: random.Random) -> Voice:
    rate = min(max(speaker.rate_wpm + rng.randint(-20, 20), RATE_WPM[0]), RATE_WPM[1])
    return Voice(speaker.voice_name, rate, rng.randint(*PITCH), rng.randint(*PITCH_RANGE))


def pad_with_silence(synthesis: demo_speech.Synthesis, rng: random.Random) -> demo_speech.Synthesis:
    """Add leading/trailing silence (zeros) and shift the phoneme positions to match."""
    lead = int(rng.uniform(*LEAD_SILENCE_SECONDS) * synthesis.sample_rate)
    tail = int(rng.uniform(*LEAD_SILENCE_SECONDS) * synthesis.sample_rate)
    audio = np.concatenate([np.zeros(lead, np.int16), synthesis.audio, np.zeros(tail, np.int16)])
    phonemes = [(start + lead, mnemonic) for start, mnemonic in synthesis.phonemes]
    return demo_speech.Synthesis(audio, synthesis.sample_rate, phonemes, synthesis.accent)


def reduce_precision(features: np.ndarray, mantissa_bits: int) -> np.ndarray:
    """Round float32 values to `mantissa_bits` explicit mantissa bits (dtype stays float32)."""
    drop = 23 - mantissa_bits
    if drop <= 0:
        return features
    bits = features.astype(np.float32).view(np.uint32)
    rounded = (bits + np.uint32(1 << (drop - 1))) & np.uint32(~((1 << drop) - 1) & 0xFFFFFFFF)
    return rounded.view(np.float32)


def synthesize_utterance(espeak: demo_speech.Espeak, text: str, speaker: Speaker, utterance_id: str,
                         rng: random.Random) -> Utterance | None:
    """Synthesize one sentence; None when its duration is outside [MIN_SECONDS, MAX_SECONDS]."""
    voice = utterance_voice(speaker, rng)
    synthesis = pad_with_silence(espeak.synthesize(text, voice), rng)
    seconds = len(synthesis.audio) / synthesis.sample_rate
    if not MIN_SECONDS <= seconds <= MAX_SECONDS:
        return None
    snr_db = rng.choice(SNR_DB_CHOICES)
    noise_rng = np.random.default_rng(rng.randrange(2**32))
    waveform = demo_speech.add_noise(demo_speech.to_feature_rate(synthesis.audio, synthesis.sample_rate),
                                     snr_db, noise_rng)
    features = reduce_precision(demo_speech.mfcc(waveform), MFCC_MANTISSA_BITS)
    return Utterance(
        utterance_id=utterance_id, text=text, speaker=speaker, voice=voice, snr_db=snr_db,
        features=features,
        frame_phonemes=demo_speech.frame_labels(synthesis, features.shape[0]),
        phoneme_sequence=demo_speech.phoneme_sequence(synthesis),
        espeak_phonemes=Counter(mnemonic for _, mnemonic in synthesis.phonemes),
    )


def generate_utterances(speakers: list[Speaker], rng: random.Random, progress,
                        counts: dict[str, int] = UTTERANCES_PER_SPLIT,
                        skip: frozenset[str] = frozenset()) -> dict[str, list[Utterance]]:
    """Round-robin over each split's speakers; every sentence is used once across all splits (and never one in
    `skip`)."""
    espeak = demo_speech.Espeak()
    sentences = (text for text in demo_sentences.sentence_stream(rng.randrange(2**32)) if text not in skip)
    by_split: dict[str, list[Utterance]] = {}
    for split, count in counts.items():
        split_speakers = [s for s in speakers if s.split == split]
        next_index = Counter()
        utterances: list[Utterance] = []
        task = progress.add_task(split, total=count)
        while len(utterances) < count:
            speaker = split_speakers[len(utterances) % len(split_speakers)]
            utterance_id = f"{speaker.speaker_id}-{speaker.chapter_id}-{next_index[speaker]:04d}"
            utterance = synthesize_utterance(espeak, next(sentences), speaker, utterance_id, rng)
            if utterance is None:
                continue
            next_index[speaker] += 1
            utterances.append(utterance)
            progress.advance(task)
        by_split[split] = sorted(utterances, key=lambda u: u.utterance_id)
    return by_split


# --- files ----------------------------------------------------------------------------------------------
def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def csv_bytes(header: list[str], rows: list[list]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode()


def write_zip(path: Path, entries: dict[str, bytes]) -> None:
    """Deflated zip with fixed timestamps and permissions, entries in sorted order (byte-reproducible)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=ZIP_TIMESTAMP)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            info.create_system = 3
            archive.writestr(info, entries[name], compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)


def usage_column(count: int, rng: random.Random) -> list[str]:
    """About half Public, half Private (exactly floor(count/2) Public), shuffled."""
    usage = ["Public"] * (count // 2) + ["Private"] * (count - count // 2)
    rng.shuffle(usage)
    return usage


def transcript_array(tokens: list[str]) -> np.ndarray:
    return np.array(["[SOS]", *tokens, "[EOS]"])


def feature_entries(root: str, by_split: dict[str, list[Utterance]]) -> dict[str, bytes]:
    return {f"{root}/{split}/mfcc/{u.utterance_id}.npy": npy_bytes(u.features)
            for split, utterances in by_split.items() for u in utterances}


def build_hw1p2(by_split, rng: random.Random) -> tuple[dict[str, bytes], bytes]:
    root = "11785-demo-hw1p2"
    entries = feature_entries(root, by_split)
    for split in ("train-clean-100", "dev-clean"):
        for u in by_split[split]:
            entries[f"{root}/{split}/transcript/{u.utterance_id}.npy"] = npy_bytes(transcript_array(u.frame_phonemes))
    test_frames = [p for u in by_split["test-clean"] for p in u.frame_phonemes]
    entries["sample_submission.csv"] = csv_bytes(["id", "label"],
                                                 [[i, rng.choice(PHONEMES)] for i in range(len(test_frames))])
    usage = usage_column(len(test_frames), rng)
    solution = csv_bytes(["id", "label", "Usage"], [[i, p, usage[i]] for i, p in enumerate(test_frames)])
    return entries, solution


def phoneme_string(phonemes: list[str]) -> str:
    return "".join(CMUDICT_ARPABET[p] for p in phonemes)


def build_hw3p2(by_split, rng: random.Random) -> tuple[dict[str, bytes], bytes]:
    root = "11785-demo-hw3p2"
    entries = feature_entries(root, by_split)
    for split in ("train-clean-100", "dev-clean"):
        for u in by_split[split]:
            entries[f"{root}/{split}/transcript/{u.utterance_id}.npy"] = npy_bytes(transcript_array(u.phoneme_sequence))
    test = by_split["test-clean"]
    alphabet = "".join(CMUDICT_ARPABET[p] for p in PHONEMES)
    made_up = ["".join(rng.choice(alphabet) for _ in range(rng.randint(10, 40))) for _ in test]
    entries["sample_submission.csv"] = csv_bytes(["index", "label"], [[i, s] for i, s in enumerate(made_up)])
    usage = usage_column(len(test), rng)
    solution = csv_bytes(["index", "label", "Usage"],
                         [[i, phoneme_string(u.phoneme_sequence), usage[i]] for i, u in enumerate(test)])
    return entries, solution


def build_hw4p2(by_split, rng: random.Random) -> tuple[dict[str, bytes], bytes]:
    root = "11785-demo-hw4p2"
    entries = feature_entries(root, by_split)
    for split in ("train-clean-100", "dev-clean"):
        for u in by_split[split]:
            entries[f"{root}/{split}/transcript/{u.utterance_id}.npy"] = npy_bytes(transcript_array(list(u.text)))
    test = by_split["test-clean"]
    words = sorted(demo_sentences.vocabulary())
    made_up = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 7))) for _ in test]
    entries["sample_submission.csv"] = csv_bytes(["index", "label"], [[i, s] for i, s in enumerate(made_up)])
    usage = usage_column(len(test), rng)
    solution = csv_bytes(["index", "label", "Usage"], [[i, u.text, usage[i]] for i, u in enumerate(test)])
    return entries, solution


BUILDERS = {"demo-hw1p2": build_hw1p2, "demo-hw3p2": build_hw3p2, "demo-hw4p2": build_hw4p2}


def check_utterances(by_split: dict[str, list[Utterance]]) -> None:
    """Fail loudly on anything the formats forbid."""
    for utterances in by_split.values():
        for u in utterances:
            assert u.features.shape == (u.num_frames, demo_speech.N_MFCC) and u.features.dtype == np.float32
            assert len(u.frame_phonemes) == u.num_frames and set(u.frame_phonemes) <= set(PHONEMES)
            assert u.phoneme_sequence[0] == u.phoneme_sequence[-1] == SILENCE
            assert set(u.phoneme_sequence) <= set(PHONEMES)
            assert set(u.text) <= HW4P2_CHARACTERS, u.text
    if "train-clean-100" not in by_split:
        return
    train_voices = {u.speaker.variant for u in by_split["train-clean-100"]}
    for split in ("dev-clean", "test-clean"):
        assert not train_voices & {u.speaker.variant for u in by_split[split]}, "held-out voice leaked into train"
    train_texts = {u.text for u in by_split["train-clean-100"]}
    assert not train_texts & {u.text for s in ("dev-clean", "test-clean") for u in by_split[s]}


# --- held-out-accent set (--heldout) -------------------------------------------------------------------------
# Speakers whose accent no demo utterance uses (train, dev or test), for judging recipes on unseen accents: the
# real competitions' test speakers are unseen too. One zip serves the three families (their labels side by side);
# the demos' normalize stage turns it into a `heldout` store and every decode reports its figures.
HELDOUT = "heldout-accents"
HELDOUT_ACCENTS = ["en-gb-scotland", "en-029"]
HELDOUT_VARIANTS = ["m5", "m6", "f4", "f5"]  # none is heard in train
HELDOUT_UTTERANCES = 120
HELDOUT_SEED = f"{SEED}-{HELDOUT}"


def heldout_speakers(rng: random.Random, taken: set[int]) -> list[Speaker]:
    combos = [(accent, variant) for variant in HELDOUT_VARIANTS for accent in HELDOUT_ACCENTS]
    speaker_ids = rng.sample(sorted(set(range(19, 9000)) - taken), len(combos))
    return [Speaker(speaker_id, rng.randrange(1000, 300000), accent, variant, HELDOUT, rng.randint(*SPEAKER_RATE_WPM))
            for speaker_id, (accent, variant) in zip(speaker_ids, combos)]


def demo_texts_and_speakers(output: Path) -> tuple[set[str], set[int]]:
    """Every sentence and speaker id of the committed demos (read from demo-hw4p2, whose labels are the text)."""
    texts = set()
    with zipfile.ZipFile(output / "demo-hw4p2" / "demo-hw4p2.zip") as archive:
        for name in archive.namelist():
            if "/transcript/" in name:
                texts.add("".join(np.load(io.BytesIO(archive.read(name)))[1:-1].tolist()))
    with open(output / "demo-hw4p2" / "solution.csv", newline="") as handle:
        texts |= {row["label"] for row in csv.DictReader(handle)}
    with open(output / "speakers.csv", newline="") as handle:
        speaker_ids = {int(row["speaker_id"]) for row in csv.DictReader(handle)}
    return texts, speaker_ids


def heldout_entries(utterances: list[Utterance], speakers: list[Speaker]) -> dict[str, bytes]:
    entries = {}
    for u in utterances:
        entries[f"{HELDOUT}/mfcc/{u.utterance_id}.npy"] = npy_bytes(u.features)
        entries[f"{HELDOUT}/transcript-hw1p2/{u.utterance_id}.npy"] = npy_bytes(transcript_array(u.frame_phonemes))
        entries[f"{HELDOUT}/transcript-hw3p2/{u.utterance_id}.npy"] = npy_bytes(transcript_array(u.phoneme_sequence))
        entries[f"{HELDOUT}/transcript-hw4p2/{u.utterance_id}.npy"] = npy_bytes(transcript_array(list(u.text)))
    rows = [[s.speaker_id, s.chapter_id, s.voice_name, s.split] for s in sorted(speakers, key=lambda s: s.speaker_id)]
    entries[f"{HELDOUT}/speakers.csv"] = csv_bytes(["speaker_id", "chapter_id", "espeak_voice", "split"], rows)
    return entries


def heldout_readme(utterances: list[Utterance], zip_bytes: int) -> str:
    seconds = [u.num_frames / 100 for u in utterances]
    overridden = Counter(m for u in utterances for m in u.espeak_phonemes.elements()
                         if m in demo_speech.ACCENT_OVERRIDES.get(u.speaker.accent, {}))
    lines = [
        "# Held-out-accent evaluation set",
        "",
        f"`{HELDOUT}.zip`: {len(utterances)} utterances by {len({u.speaker.speaker_id for u in utterances})} speakers whose "
        "accents (" + ", ".join(f"`{a}`" for a in HELDOUT_ACCENTS) + ") no demo utterance uses,",
        "made the way the demos are (see ../README.md), from sentences that occur in no demo split. Voice variants",
        f"{', '.join(HELDOUT_VARIANTS)} (never heard in train). The demo profiles' normalize stage reads it into a",
        "`heldout` store, normalized like dev; every decode reports `heldout_*` figures next to dev's.",
        "",
        "Regenerate (after the demos; it reads their sentences and speaker ids to avoid them):",
        "",
        "```",
        f"{REGENERATE_COMMAND} --heldout",
        "```",
        "",
        f"| utterances | frames | seconds (min–max) | zip bytes |",
        "|---|---|---|---|",
        f"| {len(utterances)} | {sum(u.num_frames for u in utterances)} | {min(seconds):.2f}–{max(seconds):.2f} | "
        f"{zip_bytes} |",
        "",
        "Layout: `heldout-accents/mfcc/<id>.npy` (T, 28) float32; `transcript-hw1p2/` (frame labels),",
        "`transcript-hw3p2/` (phoneme sequence), `transcript-hw4p2/` (characters), each `[SOS]` … `[EOS]` as in",
        "the demos; `speakers.csv`.",
        "",
        "Accent-specific mappings (`ACCENT_OVERRIDES` in tools/demo_speech.py), with their counts here:",
        "",
        "| accent | eSpeak | ARPAbet | count |",
        "|---|---|---|---|",
    ]
    for accent, table in demo_speech.ACCENT_OVERRIDES.items():
        for mnemonic, arpabet in table.items():
            lines.append(f"| {accent} | `{mnemonic}` | {' '.join(arpabet)} | {overridden.get(mnemonic, 0)} |")
    lines += ["", "Scottish is rhotic: eSpeak follows its r-coloured vowel classes with an explicit `r`, so each class",
              "maps to its vowel alone. Caribbean stops TH: `t[` is the TH class; its DH comes out as a plain `d` and is",
              "labelled D.", ""]
    return "\n".join(lines)


def make_heldout(output: Path, console, progress_columns) -> None:
    from rich.progress import Progress

    rng = random.Random(HELDOUT_SEED)
    texts, taken = demo_texts_and_speakers(output)
    speakers = heldout_speakers(rng, taken)
    with Progress(*progress_columns, console=console) as progress:
        utterances = generate_utterances(speakers, rng, progress, {HELDOUT: HELDOUT_UTTERANCES},
                                         frozenset(texts))[HELDOUT]
    check_utterances({HELDOUT: utterances})
    assert not {u.text for u in utterances} & texts, "a held-out sentence occurs in the demos"
    assert not {u.speaker.accent for u in utterances} & set(ACCENTS), "a held-out accent occurs in the demos"
    zip_path = output / HELDOUT / f"{HELDOUT}.zip"
    write_zip(zip_path, heldout_entries(utterances, speakers))
    (output / HELDOUT / "README.md").write_text(heldout_readme(utterances, zip_path.stat().st_size))
    console.print(f"{zip_path.relative_to(output)}: {zip_path.stat().st_size / 1e6:.2f} MB, sha256 {sha256(zip_path)[:16]}")


# --- README -------------------------------------------------------------------------------------------------
def readme_text(by_split, sizes: dict[str, int]) -> str:
    seen = Counter()
    for utterances in by_split.values():
        for u in utterances:
            seen.update(u.espeak_phonemes)
    frames = {split: sum(u.num_frames for u in us) for split, us in by_split.items()}
    durations = [u.num_frames / 100 for us in by_split.values() for u in us]
    lines = [
        "# Embedded demo competitions",
        "",
        "Small synthetic stand-ins for the CMU 11-785 speech Kaggle competitions, in the exact layouts of a",
        "recent semester (F24/F25 HW1P2 and HW3P2, F23-style MFCC HW4P2), so asrpipe runs end to end with no",
        "Kaggle account. Each `demo-*/demo-*.zip` is what Kaggle would serve (one data root folder plus",
        "`sample_submission.csv`); `solution.csv` next to it is the held-back answer key (with `Usage`",
        "Public/Private) for the local judge. It is not inside the zip.",
        "",
        "## Regenerate",
        "",
        "```",
        "apt-get update && apt-get install -y espeak-ng libespeak-ng-dev",
        ".venv/bin/pip install -e '.[demo-gen]'",
        REGENERATE_COMMAND,
        "```",
        "",
        f"Seeded (`SEED = {SEED}` in `tools/make_demo.py`) and byte-reproducible on the same espeak-ng and",
        "librosa versions (zip entries are sorted and carry fixed timestamps). Code: `tools/make_demo.py`",
        "(layouts, zips), `tools/demo_speech.py` (libespeak-ng via ctypes, phoneme mapping, MFCC),",
        "`tools/demo_sentences.py` (sentence grammar). Generated with espeak-ng "
        f"{espeak_version()}, librosa {librosa_version()}.",
        "",
        "## How the data is made",
        "",
        "* **Text**: a seeded template grammar over "
        f"{len(demo_sentences.vocabulary())} distinct words (names, nouns, adjectives, past-tense verbs,",
        "  contractions such as DIDN'T / IT'S / MARY'S). Uppercase, letters, space and apostrophe only. Every",
        "  sentence occurs once, so dev and test sentences never occur in train.",
        "* **Speech**: libespeak-ng (C library, via ctypes) in `AUDIO_OUTPUT_SYNCHRONOUS` mode with",
        "  `espeakINITIALIZE_PHONEME_EVENTS`. The synth callback receives the audio (22050 Hz) and",
        "  `espeakEVENT_PHONEME` events carrying the eSpeak phoneme mnemonic and its start sample, so the",
        "  alignment is exact by construction. Per utterance: speaking rate "
        f"{RATE_WPM[0]}–{RATE_WPM[1]} wpm around a per-speaker",
        f"  rate, pitch {PITCH[0]}–{PITCH[1]}, pitch range {PITCH_RANGE[0]}–{PITCH_RANGE[1]}, "
        f"{LEAD_SILENCE_SECONDS[0]:.2f}–{LEAD_SILENCE_SECONDS[1]:.2f} s of silence padded at each end, and white",
        "  noise at an SNR drawn from " + ", ".join("clean" if s is None else f"{s:g} dB" for s in SNR_DB_CHOICES) + ".",
        f"  Utterances outside {MIN_SECONDS}–{MAX_SECONDS} s are re-drawn.",
        "* **Features**: audio resampled to 16 kHz (soxr), `librosa.feature.mfcc` with 28 coefficients,",
        f"  n_fft {demo_speech.N_FFT} (25 ms), hop {demo_speech.HOP_LENGTH} (10 ms), {demo_speech.N_MELS} mel bands, centred frames",
        "  (frame t is centred at t × 10 ms); shape (T, 28) float32, not normalized. To let deflate shrink",
        f"  the zips, values are rounded to {MFCC_MANTISSA_BITS} mantissa bits (relative error < 2^-{MFCC_MANTISSA_BITS + 1}); the dtype stays float32.",
        "* **hw1p2 labels**: the label of frame t is the phoneme sounding at t × 10 ms (frames before the",
        "  first phoneme event, i.e. the padded silence, are `[SIL]`; eSpeak pauses map to `[SIL]`). An",
        "  eSpeak phoneme that maps to two ARPAbet phonemes is split into two halves of its duration.",
        "* **hw3p2 labels**: the mapped phoneme sequence with a leading and trailing `[SIL]`; eSpeak pauses",
        "  inside the utterance become `[SIL]` (runs of pauses collapse to one).",
        "* **hw4p2 labels**: the sentence's characters.",
        "",
        "## Speakers and voice split",
        "",
        "A speaker is an eSpeak accent plus a voice variant (`en-us+m3`); each has one LibriSpeech-style",
        "speaker id and chapter id (`SPK-CHAPTER-UTT.npy`). Voice variants are disjoint across splits, so",
        "no dev or test voice is heard in train. Accents: " + ", ".join(f"`{a}`" for a in ACCENTS) + ".",
        "",
        "| split | voice variants | speakers | utterances | frames | seconds (min–max) |",
        "|---|---|---|---|---|---|",
    ]
    for split in SPLITS:
        us = by_split[split]
        secs = [u.num_frames / 100 for u in us]
        lines.append(f"| {split} | {', '.join(SPLIT_VARIANTS[split])} | "
                     f"{len({u.speaker.speaker_id for u in us})} | {len(us)} | {frames[split]} | "
                     f"{min(secs):.2f}–{max(secs):.2f} |")
    lines += [
        "",
        f"Mean utterance length {np.mean(durations):.2f} s. `speakers.csv` lists every speaker id with its",
        "eSpeak voice and split. The three demos use the same utterances and ids.",
        "",
        "## Files",
        "",
        "| competition | zip bytes | solution.csv bytes | rows in solution | data root in zip |",
        "|---|---|---|---|---|",
    ]
    for name in COMPETITIONS:
        lines.append(f"| {name} | {sizes[name + '.zip']} | {sizes[name + '/solution.csv']} | "
                     f"{sizes[name + '/rows']} | `11785-{name}/` |")
    lines += [
        "",
        f"Total on disk (all demo data): {sizes['total'] / 1e6:.2f} MB, with the held-out-accent evaluation set",
        f"(`{HELDOUT}/`, see its README: speakers of accents no demo utterance uses, scored by every decode).",
        "",
        "* demo-hw1p2: `train-clean-100/` and `dev-clean/` hold `mfcc/<id>.npy` (T, 28) float32 and",
        "  `transcript/<id>.npy`, a 1-D str array of length T+2 (`[SOS]`, one phoneme per frame, `[EOS]`);",
        "  `test-clean/mfcc/` only. `sample_submission.csv`: `id,label`, one row per test frame, ids",
        "  0..N-1 over the test utterances concatenated in sorted filename order; labels are phoneme strings.",
        "* demo-hw3p2: same folders; transcripts are `[SOS]`, `[SIL]`, phonemes…, `[SIL]`, `[EOS]`.",
        "  `sample_submission.csv`: `index,label`, one row per test utterance in sorted order, the label",
        "  being the phoneme string in the F22+ single-character map (`[SIL]` → `-`, `AH` → `A`, …).",
        "* demo-hw4p2: same folders; transcripts are `[SOS]`, one character per entry (A–Z, space,",
        "  apostrophe), `[EOS]`. `sample_submission.csv`: `index,label` with uppercase text.",
        "* `sample_submission.csv` labels are random; `solution.csv` adds the true label and `Usage`",
        "  (floor(N/2) rows Public, the rest Private, seeded).",
        "",
        "## eSpeak → ARPAbet",
        "",
        "Labels follow CMUdict conventions (as LibriSpeech alignments label every reader, British ones",
        "included, with American CMUdict pronunciations): eSpeak's English mnemonics name lexical vowel",
        "classes, and each maps to the CMUdict phoneme(s) of that class. So the r-coloured classes map to",
        "vowel + R (or ER) even for the non-rhotic British accents, where the R is not audible; the BATH",
        "class `aa` is AE (CMUdict) although British voices say /ɑː/. Stress marks never appear in phoneme",
        "events. A mnemonic not in the table stops the generator (`UnmappedPhonemeError`).",
        "",
        "| eSpeak | ARPAbet | count in the data | note |",
        "|---|---|---|---|",
    ]
    for mnemonic, arpabet in demo_speech.ESPEAK_TO_ARPABET.items():
        note = demo_speech.MAPPING_NOTES.get(mnemonic, "")
        lines.append(f"| `{mnemonic}` | {' '.join(arpabet)} | {seen.get(mnemonic, 0)} | {note} |")
    lines.append("")
    return "\n".join(lines)


def espeak_version() -> str:
    import subprocess

    try:
        out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=True).stdout
        return out.split(":")[1].split()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return "unknown"


def librosa_version() -> str:
    import librosa

    return librosa.__version__


def write_speakers_csv(path: Path, speakers: list[Speaker]) -> None:
    rows = [[s.speaker_id, s.chapter_id, s.voice_name, s.split] for s in sorted(speakers, key=lambda s: s.speaker_id)]
    path.write_bytes(csv_bytes(["speaker_id", "chapter_id", "espeak_voice", "split"], rows))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=OUTPUT_DIR, help="default: pipeline/demo_data")
    parser.add_argument("--heldout", action="store_true",
                        help=f"write only the held-out-accent set ({HELDOUT}/), from the committed demos")
    args = parser.parse_args(argv)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console()
    started = time.time()
    if args.heldout:
        make_heldout(args.output, console, (TextColumn("{task.description:>16}"), BarColumn(), MofNCompleteColumn(),
                                            TimeElapsedColumn()))
        console.print(f"done in {time.time() - started:.0f} s")
        return 0
    rng = random.Random(SEED)
    speakers = make_speakers(rng)
    with Progress(TextColumn("{task.description:>16}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        by_split = generate_utterances(speakers, rng, progress)
    check_utterances(by_split)

    sizes: dict[str, int] = {}
    for name in COMPETITIONS:
        entries, solution = BUILDERS[name](by_split, random.Random(f"{SEED}-{name}"))
        zip_path = args.output / name / f"{name}.zip"
        write_zip(zip_path, entries)
        (args.output / name / "solution.csv").write_bytes(solution)
        sizes[name + ".zip"] = zip_path.stat().st_size
        sizes[name + "/solution.csv"] = len(solution)
        sizes[name + "/rows"] = solution.count(b"\n") - 1
        console.print(f"{zip_path.relative_to(args.output)}: {sizes[name + '.zip'] / 1e6:.2f} MB, sha256 {sha256(zip_path)[:16]}")
    write_speakers_csv(args.output / "speakers.csv", speakers)
    seconds = time.time() - started
    # Two passes so the README can state its own size in the total.
    readme = args.output / "README.md"
    for _ in range(2):
        sizes["total"] = sum(p.stat().st_size for p in args.output.rglob("*") if p.is_file())
        readme.write_text(readme_text(by_split, sizes))
    console.print(f"total {sizes['total'] / 1e6:.2f} MB in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
