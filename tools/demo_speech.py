"""Speech synthesis with exact phoneme timing (libespeak-ng through ctypes) and MFCC features.

Only needed to regenerate the demo competitions (see tools/make_demo.py); asrpipe never imports it.
Needs Debian's espeak-ng (`apt-get install -y espeak-ng libespeak-ng-dev`) and librosa.

libespeak-ng, initialised with AUDIO_OUTPUT_SYNCHRONOUS and espeakINITIALIZE_PHONEME_EVENTS, calls our
callback with audio chunks and an event list; each espeakEVENT_PHONEME event carries the eSpeak phoneme
mnemonic (id.string) and the absolute output sample at which that phoneme starts (`sample`). A phoneme
lasts until the next phoneme event (or the end of the audio).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass

import numpy as np

# --- espeak-ng constants (from /usr/include/espeak-ng/speak_lib.h) -------------------------------------
AUDIO_OUTPUT_SYNCHRONOUS = 2
ESPEAK_INITIALIZE_PHONEME_EVENTS = 0x0001
ESPEAK_CHARS_UTF8 = 1
POS_CHARACTER = 1
EVENT_LIST_TERMINATED = 0
EVENT_PHONEME = 7
PARAM_RATE = 1
PARAM_PITCH = 3
PARAM_RANGE = 4

# --- feature constants ----------------------------------------------------------------------------------
FEATURE_SAMPLE_RATE = 16_000
N_MFCC = 28
N_FFT = 400  # 25 ms window
HOP_LENGTH = 160  # 10 ms hop -> 100 frames/s
N_MELS = 40

SILENCE = "[SIL]"
MIN_PAUSE_SECONDS = 0.03  # shorter pauses inside an utterance are not a [SIL] in the hw3p2 sequence

# eSpeak-ng English phoneme mnemonics (as reported in phoneme events; stress marks never appear there)
# -> the 40-class ARPAbet set of the course, following CMUdict conventions for the lexical class each
# mnemonic names (so British voices get American CMUdict labels, as LibriSpeech alignments do).
# A tuple of two splits that eSpeak phoneme's duration in halves. Every entry was seen in the accents used.
ESPEAK_TO_ARPABET: dict[str, tuple[str, ...]] = {
    # pauses
    "_": (SILENCE,), "_:": (SILENCE,), "_|": (SILENCE,),
    # monophthong vowels
    "@": ("AH",), "@2": ("AH",), "a#": ("AH",), "V": ("AH",),
    "3": ("ER",), "3:": ("ER",),
    "a": ("AE",), "aa": ("AE",),
    "A:": ("AA",), "0": ("AA",),
    "O:": ("AO",), "O2": ("AO",),
    "E": ("EH",),
    "I": ("IH",), "I2": ("IH",), "I#": ("IH",),
    "i": ("IY",), "i:": ("IY",),
    "U": ("UH",), "u:": ("UW",),
    # diphthongs
    "aI": ("AY",), "aU": ("AW",), "eI": ("EY",), "oU": ("OW",), "OI": ("OY",),
    # r-coloured vowel classes (CMUdict vowel + R, also for the non-rhotic accents)
    "A@": ("AA", "R"), "O@": ("AO", "R"), "o@": ("AO", "R"), "e@": ("EH", "R"),
    "i@": ("IH", "R"), "i@3": ("IH", "R"), "U@": ("UH", "R"),
    "aI@": ("AY", "ER"), "aI3": ("AY", "ER"), "aU3": ("AW", "ER"),
    # syllabic consonants (CMUdict: "little" L IH T AH L, "button" B AH T AH N)
    "@L": ("AH", "L"), "n-": ("AH", "N"),
    # consonants
    "b": ("B",), "tS": ("CH",), "d": ("D",), "D": ("DH",), "f": ("F",), "g": ("G",), "h": ("HH",),
    "dZ": ("JH",), "k": ("K",), "l": ("L",), "m": ("M",), "n": ("N",), "N": ("NG",), "p": ("P",),
    "r": ("R",), "r-": ("R",), "s": ("S",), "S": ("SH",), "t": ("T",), "t#": ("T",), "t2": ("T",),
    "?": ("T",), "T": ("TH",), "v": ("V",), "w": ("W",), "j": ("Y",), ";": ("Y",), "z": ("Z",),
    "Z": ("ZH",),
}

# Why the less obvious entries map as they do (shown in pipeline/demo_data/README.md).
MAPPING_NOTES: dict[str, str] = {
    "_": "pause (sentence end, zero-length)", "_:": "pause", "_|": "short pause (en-gb-x-gbcwmd)",
    "@2": "reduced schwa in THE", "a#": "reduced vowel of unstressed A; rp uses it for the lettER schwa",
    "V": "STRUT vowel", "3": "lettER vowel; British voices say schwa, CMUdict writes ER",
    "aa": "BATH class: /æ/ in US voices, /ɑː/ in British ones; CMUdict AE",
    "0": "LOT vowel (US /ɑ/, UK /ɒ/)", "O2": "en-us LOT-CLOTH vowel (WANT, LOST, WANDERED); no clean match, AO chosen",
    "I2": "unstressed I (weak vowel)", "I#": "en-us unstressed I (-ED, -ES endings)",
    "i": "happY vowel (final unstressed)",
    "A@": "START class (CAR): r-coloured in US, /ɑː/ in UK", "O@": "NORTH/FORCE class (rp, gbcwmd)",
    "o@": "NORTH/FORCE class (DOOR, MORE)", "e@": "SQUARE class (THERE)", "i@": "NEAR class (UK)",
    "i@3": "NEAR class (HERE)", "U@": "CURE class (POOR)",
    "aI@": "FIRE (UK)", "aI3": "FIRE/TIRED (US)", "aU3": "HOUR",
    "@L": "syllabic l, split in halves", "n-": "syllabic n, split in halves",
    "r-": "linking r, pronounced before a vowel", "t#": "US flapped t (LITTLE, BETTER)",
    "t2": "t in unstressed INTO", "?": "glottal stop for t (BUTTON)",
    ";": "linking /j/ glide between THE and a vowel (THE EVENING); no CMUdict counterpart, Y chosen",
}


# Accents heard only in the held-out-accent set (tools/make_demo.py --heldout), and where their mnemonics need
# another entry. Scottish is rhotic: eSpeak follows its r-coloured vowel classes with an explicit `r`, so the class
# maps to the vowel alone (CMUdict's R is that `r`); its NURSE vowels (`IR` BIRD, `VR` WORD) are CMUdict ER.
# Caribbean stops TH: `t[` (dental t) is the TH class; its DH is a plain `d` in the events, so it is labelled D
# (the events carry no lexical class for it).
ACCENT_OVERRIDES: dict[str, dict[str, tuple[str, ...]]] = {
    "en-gb-scotland": {"A@": ("AA",), "O@": ("AO",), "o@": ("AO",), "e@": ("EH",), "i@": ("IH",),
                       "i@3": ("IH",), "aI2": ("AY",), "IR": ("ER",), "VR": ("ER",)},
    "en-029": {"t[": ("TH",)},
}


class UnmappedPhonemeError(KeyError):
    """An eSpeak phoneme with no entry in ESPEAK_TO_ARPABET: extend the table (and the README)."""


def to_arpabet(mnemonic: str, accent: str | None = None) -> tuple[str, ...]:
    override = ACCENT_OVERRIDES.get(accent or "", {})
    try:
        return override[mnemonic] if mnemonic in override else ESPEAK_TO_ARPABET[mnemonic]
    except KeyError:
        raise UnmappedPhonemeError(f"eSpeak phoneme {mnemonic!r} has no ARPAbet mapping"
                                   f"{f' (accent {accent})' if accent else ''}") from None


class _EspeakEvent(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),  # union {int number; const char *name; char string[8];}
    ]


_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                  ctypes.POINTER(_EspeakEvent))


@dataclass(frozen=True)
class Voice:
    """An eSpeak voice ("en-us+m3") with prosody; one Voice name = one demo speaker."""

    name: str
    rate_wpm: int
    pitch: int
    pitch_range: int


@dataclass
class Synthesis:
    audio: np.ndarray  # int16 at `sample_rate`
    sample_rate: int
    phonemes: list[tuple[int, str]]  # (start sample, eSpeak mnemonic), in order
    accent: str | None = None  # the voice's accent, for ACCENT_OVERRIDES


class Espeak:
    """The libespeak-ng library in synchronous mode, with phoneme events on. One instance per process."""

    def __init__(self) -> None:
        path = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        self._lib = ctypes.CDLL(path)
        self._lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                           ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.sample_rate = self._lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, None,
                                                       ESPEAK_INITIALIZE_PHONEME_EVENTS)
        if self.sample_rate <= 0:
            raise RuntimeError("espeak_Initialize failed (is espeak-ng-data installed?)")
        self._chunks: list[np.ndarray] = []
        self._phonemes: list[tuple[int, str]] = []
        self._callback = _SynthCallback(self._on_audio)  # keep a reference: C holds the pointer
        self._lib.espeak_SetSynthCallback(self._callback)

    def _on_audio(self, wav, num_samples, events) -> int:
        if num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        i = 0
        while events[i].type != EVENT_LIST_TERMINATED:
            event = events[i]
            if event.type == EVENT_PHONEME:
                self._phonemes.append((event.sample, bytes(event.id).split(b"\0")[0].decode()))
            i += 1
        return 0

    def set_voice(self, voice: Voice) -> None:
        if self._lib.espeak_SetVoiceByName(voice.name.encode()) != 0:
            raise RuntimeError(f"eSpeak voice {voice.name!r} not found")
        for parameter, value in ((PARAM_RATE, voice.rate_wpm), (PARAM_PITCH, voice.pitch),
                                 (PARAM_RANGE, voice.pitch_range)):
            self._lib.espeak_SetParameter(parameter, value, 0)

    def synthesize(self, text: str, voice: Voice) -> Synthesis:
        self.set_voice(voice)
        self._chunks, self._phonemes = [], []
        data = text.encode()
        status = self._lib.espeak_Synth(data, len(data) + 1, 0, POS_CHARACTER, 0, ESPEAK_CHARS_UTF8, None, None)
        if status != 0:
            raise RuntimeError(f"espeak_Synth failed with status {status}")
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return Synthesis(audio, self.sample_rate, list(self._phonemes), voice.name.split("+")[0])


def frame_labels(synthesis: Synthesis, num_frames: int) -> list[str]:
    """ARPAbet label of every 10 ms frame: the phoneme sounding at the frame centre (t * 10 ms).

    Frames before the first phoneme event are [SIL]. An eSpeak phoneme that maps to two ARPAbet
    phonemes (e.g. syllabic "n-" -> AH N) is split into two equal halves.
    """
    seconds_per_sample = 1.0 / synthesis.sample_rate
    boundaries: list[tuple[float, str]] = [(0.0, SILENCE)]
    events = synthesis.phonemes
    audio_end = len(synthesis.audio) * seconds_per_sample
    for index, (start_sample, mnemonic) in enumerate(events):
        start = start_sample * seconds_per_sample
        end = events[index + 1][0] * seconds_per_sample if index + 1 < len(events) else audio_end
        parts = to_arpabet(mnemonic, synthesis.accent)
        for part_index, part in enumerate(parts):
            boundaries.append((start + (end - start) * part_index / len(parts), part))
    starts = np.array([b[0] for b in boundaries])
    centres = np.arange(num_frames) * HOP_LENGTH / FEATURE_SAMPLE_RATE
    which = np.searchsorted(starts, centres, side="right") - 1
    return [boundaries[i][1] for i in which]


def phoneme_sequence(synthesis: Synthesis) -> list[str]:
    """Utterance-level ARPAbet sequence (hw3p2): [SIL], the phonemes, [SIL].

    A run of eSpeak pauses inside the utterance becomes one [SIL] if it lasts at least
    MIN_PAUSE_SECONDS (shorter ones are inaudible and dropped).
    """
    events = synthesis.phonemes
    ends = [start for start, _ in events[1:]] + [len(synthesis.audio)]
    sequence = [SILENCE]
    pause_samples = 0
    for (start, mnemonic), end in zip(events, ends):
        phonemes = to_arpabet(mnemonic, synthesis.accent)
        if phonemes == (SILENCE,):
            pause_samples += end - start
            continue
        if pause_samples >= MIN_PAUSE_SECONDS * synthesis.sample_rate and sequence[-1] != SILENCE:
            sequence.append(SILENCE)
        pause_samples = 0
        sequence.extend(phonemes)
    if sequence[-1] != SILENCE:
        sequence.append(SILENCE)
    return sequence


def to_feature_rate(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """int16 audio -> float32 in [-1, 1] at 16 kHz."""
    import librosa

    waveform = audio.astype(np.float32) / 32768.0
    return librosa.resample(waveform, orig_sr=sample_rate, target_sr=FEATURE_SAMPLE_RATE, res_type="soxr_hq")


def add_noise(waveform: np.ndarray, snr_db: float | None, rng: np.random.Generator) -> np.ndarray:
    """White noise at `snr_db` relative to the speech power (None = clean)."""
    if snr_db is None:
        return waveform
    speech_power = float(np.mean(waveform**2)) or 1e-12
    noise_power = speech_power / (10.0 ** (snr_db / 10.0))
    return (waveform + rng.normal(0.0, np.sqrt(noise_power), waveform.shape)).astype(np.float32)


def mfcc(waveform: np.ndarray) -> np.ndarray:
    """(T, 28) float32 MFCC, 25 ms window, 10 ms hop, 40 mel bands, frame t centred at t * 10 ms."""
    import librosa

    features = librosa.feature.mfcc(y=waveform, sr=FEATURE_SAMPLE_RATE, n_mfcc=N_MFCC, n_fft=N_FFT,
                                    hop_length=HOP_LENGTH, win_length=N_FFT, n_mels=N_MELS, center=True)
    return np.ascontiguousarray(features.T, dtype=np.float32)
