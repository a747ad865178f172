"""Competition profiles: everything that differs between competitions (and semesters) lives here.

`resolve_profile("hw3p2")` takes a task family (→ its latest profile), a profile name (`demo-hw3p2`) or a slug.
Issue #3 adds every real semester; the demo competitions are embedded in the package (pipeline/demo_data/).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import AsrpipeError

DEMO_DATA = Path(__file__).resolve().parent.parent / "demo_data"

# HW1P2: 40 frame classes, [SIL] first then alphabetical ARPAbet (F23+ starters).
HW1P2_PHONEMES = [
    "[SIL]", "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G", "HH", "IH", "IY",
    "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH", "UH", "UW", "V", "W", "Y", "Z", "ZH",
]

# HW3P2 (F22+): the starters' "CMUdict_ARPAbet" dict order, blank first. Kaggle scores the single-character strings.
HW3P2_PHONEME_TO_CHAR = {
    "": " ", "[SIL]": "-", "NG": "G", "F": "f", "M": "m", "AE": "@", "R": "r", "UW": "u", "N": "n", "IY": "i",
    "AW": "W", "V": "v", "UH": "U", "OW": "o", "AA": "a", "ER": "R", "HH": "h", "Z": "z", "K": "k", "CH": "C",
    "W": "w", "EY": "e", "ZH": "Z", "T": "t", "EH": "E", "Y": "y", "AH": "A", "B": "b", "P": "p", "TH": "T",
    "DH": "D", "AO": "c", "G": "g", "L": "l", "JH": "j", "OY": "O", "SH": "S", "D": "d", "AY": "Y", "S": "s",
    "IH": "I",
}
HW3P2_PHONEMES = list(HW3P2_PHONEME_TO_CHAR)            # 41 CTC outputs, index 0 = blank
HW3P2_LABELS = list(HW3P2_PHONEME_TO_CHAR.values())     # " -Gfm@runiWvUoaRhzkCweZtEyAbpTDcgljOSdYsI"

# HW4P2 (F23/S24 MFCC era): pad, sos, eos, then characters.
HW4P2_VOCAB = ["<pad>", "<sos>", "<eos>"] + [chr(c) for c in range(ord("A"), ord("Z") + 1)] + ["'", " "]


@dataclass(frozen=True)
class Profile:
    name: str                    # e.g. demo-hw3p2, hw3p2-f25
    family: str                  # hw1p2 | hw3p2 | hw4p2
    semester: str
    slug: str                    # Kaggle competition slug
    feature_dir: str             # mfcc | fbank
    feature_dim: int
    transcript_dir: str          # transcript | transcripts | text
    markers: tuple[str, str]     # start/end tokens wrapped around every transcript
    symbols: tuple[str, ...]     # model output symbols (index = class id)
    csv_columns: tuple[str, str] # id column, label column
    label_format: str            # "chars" (hw3p2 single-char string), "phoneme" / "int" (hw1p2), "text" (hw4p2)
    metric: str                  # levenshtein | accuracy | cer
    metric_direction: str        # min | max
    param_limit: int | None
    partitions: tuple[str, str, str] = ("train-clean-100", "dev-clean", "test-clean")
    demo: bool = False
    sample_submission: str = "sample_submission.csv"
    embedded_dir: Path | None = None   # where a demo competition's zip + solution live (default: demo_data/<name>)

    @property
    def default_config(self) -> str:
        return "demo" if self.demo else "default"

    @property
    def embedded_zip(self) -> Path:
        return (self.embedded_dir or DEMO_DATA / self.name) / f"{self.name}.zip"

    @property
    def embedded_solution(self) -> Path:
        return (self.embedded_dir or DEMO_DATA / self.name) / "solution.csv"

    @property
    def char_map(self) -> list[str] | None:
        """Per-class output characters for CSV strings (hw3p2), else None."""
        return HW3P2_LABELS if self.family == "hw3p2" and self.label_format == "chars" else None


PROFILES: dict[str, Profile] = {}


def register(profile: Profile) -> Profile:
    PROFILES[profile.name] = profile
    return profile


register(Profile(
    name="demo-hw1p2", family="hw1p2", semester="demo (F24 layout)", slug="demo-hw1p2", feature_dir="mfcc",
    feature_dim=28, transcript_dir="transcript", markers=("[SOS]", "[EOS]"), symbols=tuple(HW1P2_PHONEMES),
    csv_columns=("id", "label"), label_format="phoneme", metric="accuracy", metric_direction="max",
    param_limit=20_000_000, demo=True,
))
register(Profile(
    name="demo-hw3p2", family="hw3p2", semester="demo (F25 layout)", slug="demo-hw3p2", feature_dir="mfcc",
    feature_dim=28, transcript_dir="transcript", markers=("[SOS]", "[EOS]"), symbols=tuple(HW3P2_PHONEMES),
    csv_columns=("index", "label"), label_format="chars", metric="levenshtein", metric_direction="min",
    param_limit=20_000_000, demo=True,
))
register(Profile(
    name="demo-hw4p2", family="hw4p2", semester="demo (F23 MFCC layout)", slug="demo-hw4p2", feature_dir="mfcc",
    feature_dim=28, transcript_dir="transcript", markers=("[SOS]", "[EOS]"), symbols=tuple(HW4P2_VOCAB),
    csv_columns=("index", "label"), label_format="text", metric="levenshtein", metric_direction="min",
    param_limit=30_000_000, demo=True,
))

# A task family resolves to its latest known real profile. Real semesters (and so this map) arrive with the
# Kaggle profiles work; until then only the embedded demo competitions are known.
FAMILY_DEFAULT: dict[str, str] = {}


class UnknownTask(AsrpipeError, ValueError):
    pass


def resolve_profile(task: str) -> Profile:
    if task in PROFILES:
        return PROFILES[task]
    if task in FAMILY_DEFAULT:
        return PROFILES[FAMILY_DEFAULT[task]]
    for profile in PROFILES.values():
        if profile.slug == task:
            return profile
    known = ", ".join(sorted(PROFILES) + sorted(FAMILY_DEFAULT))
    raise UnknownTask(f"--task {task}: unknown task (known: {known})")
