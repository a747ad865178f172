"""Competition profiles: everything that differs between competitions (and semesters) lives here.

`resolve_profile("hw3p2")` takes a task family (→ its latest profile), a profile name (`hw3p2-s24`,
`demo-hw3p2`), a Kaggle slug (`hw3p2asr-s24`) or the folder name the data unpacks to (`11-785-s24-hw3p2`).

Facts come from docs/formats.md (its source tags are in each profile's `sources`).
Facts that the formats doc marks as conflicting or unverified are listed in `conflicts`: the download stage
detects them from the data (shapes, transcripts, the sample submission) and records "declared vs detected".
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import AsrpipeError

DEMO_DATA = Path(__file__).resolve().parent.parent / "demo_data"

_ARPABET = ["AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G", "HH", "IH", "IY",
            "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH", "UH", "UW", "V", "W", "Y", "Z",
            "ZH"]  # the 39 ARPAbet phones, alphabetical

# HW1P2: 40 frame classes, silence first then alphabetical ARPAbet. F23+ spell silence "[SIL]", S22/F22 "SIL".
HW1P2_PHONEMES = ["[SIL]", *_ARPABET]
HW1P2_PHONEMES_S22 = ["SIL", *_ARPABET]

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

# HW3P2 S22: Kaggle's phonemes.py: blank, SIL, then alphabetical ARPAbet; its own PHONEME_MAP (SIL → ".", Y → "?").
HW3P2_PHONEMES_S22 = ["", "SIL", *_ARPABET]
HW3P2_LABELS_S22 = [" ", ".", "a", "A", "h", "o", "w", "y", "b", "c", "d", "D", "e", "r", "E", "f", "g", "H", "i",
                    "I", "j", "k", "l", "m", "n", "N", "O", "Y", "p", "R", "s", "S", "t", "T", "u", "U", "v", "W",
                    "?", "z", "Z"]

_LETTERS = [chr(c) for c in range(ord("A"), ord("Z") + 1)]
# HW4P2 character vocabularies (index = model output id).
HW4P2_VOCAB_S22 = ["<sos>", *_LETTERS, "'", " ", "<eos>"]                       # S22/F22: 30, no pad
HW4P2_VOCAB = ["<pad>", "<sos>", "<eos>", *_LETTERS, "'", " "]                   # S23–S24 (F23/S24 VOCAB): 31
HW4P2_VOCAB_F24 = ["<|endoftext|>", "<|padding|>", "<|unknown|>", *_LETTERS, " ", "'"]   # F24 char tokenizer: 31
HW4P2_VOCAB_S25 = ["[PAD]", "[UNK]", "[MASK]", "[SOS]", "[EOS]", "[BLANK]", " ", *_LETTERS, "'", "\n"]  # hw4lib: 35

MFCC_DIMS = (13, 15, 27, 28)   # every MFCC dimension a semester has shipped
FBANK_DIM = 80
MARKER_PAIRS = (("[SOS]", "[EOS]"), ("<sos>", "<eos>"))
TRANSCRIPT_DIRS = ("transcript", "transcripts", "transcript/raw", "text")
SAMPLE_NAMES = ("sample_submission.csv", "random_submission.csv", "sample.csv")
LABEL_FORMATS = ("chars", "phoneme", "int", "text")
# facts a profile may declare as conflicting: detected from the data by the download stage
DETECTABLE = ("feature_dim", "feature_layout", "markers", "transcript_dir", "csv_columns", "label_format",
              "sample_submission", "test_order")


@dataclass(frozen=True)
class Profile:
    name: str                    # e.g. demo-hw3p2, hw3p2-f25
    family: str                  # hw1p2 | hw3p2 | hw4p2
    semester: str
    slug: str | None             # Kaggle competition slug (None: not found in any public source)
    feature_dir: str             # mfcc | fbank
    feature_dim: int
    transcript_dir: str          # transcript | transcripts | transcript/raw | text
    markers: tuple[str, str] | None  # start/end tokens wrapped around every transcript (None: bare text)
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
    feature_layout: str = "TF"   # "TF": (frames, dim) arrays; "FT": (dim, frames) (the F24 hw4p2 fbank)
    test_order: str | None = None  # S22: a CSV listing the test files in submission order; None = sorted file names
    char_labels: tuple[str, ...] | None = None   # hw3p2: the single character Kaggle scores, per class
    specials: tuple[tuple[str, str], ...] = ()   # hw4p2: (role, symbol) for pad / sos / eos / unk
    data_name: str | None = None  # the folder the archive unpacks to (or the Kaggle dataset dir), if known
    slack_slug: str | None = None
    conflicts: tuple[str, ...] = ()  # facts the formats doc marks conflicting/unverified: detected from the data
    sources: str = ""            # formats-doc source tags
    local_data: Path | None = None   # data fetched outside asrpipe (a Kaggle zip or an unpacked folder)
    heldout: Path | None = None  # a labelled evaluation set of unseen speakers (zip: <name>/mfcc, transcript-<family>)

    @property
    def default_config(self) -> str:
        return "demo" if self.demo else "default"

    @property
    def archive_name(self) -> str:
        """Name of the archive as Kaggle serves it (`<slug>.zip`)."""
        return self.slug or self.data_name or self.name

    @property
    def embedded_zip(self) -> Path:
        return (self.embedded_dir or DEMO_DATA / self.name) / f"{self.archive_name}.zip"

    @property
    def embedded_solution(self) -> Path:
        return (self.embedded_dir or DEMO_DATA / self.name) / "solution.csv"

    @property
    def rules_url(self) -> str | None:
        """The page where the competition's rules are accepted (Kaggle refuses downloads until they are)."""
        return f"https://www.kaggle.com/competitions/{self.slug}/rules" if self.slug and not self.demo else None

    @property
    def char_map(self) -> list[str] | None:
        """Per-class output characters for CSV strings (hw3p2), else None."""
        if self.label_format != "chars":
            return None
        return list(self.char_labels) if self.char_labels else HW3P2_LABELS

    @property
    def feature_shape(self) -> str:
        return f"(T,{self.feature_dim})" if self.feature_layout == "TF" else f"({self.feature_dim},T)"

    def special(self, role: str) -> int | None:
        """Index of a special symbol by role (pad / sos / eos / unk / blank), None if the vocabulary has none."""
        symbol = dict(self.specials).get(role)
        return self.symbols.index(symbol) if symbol is not None else None

    def declared(self) -> dict:
        """The detectable facts as this profile declares them (compared with what the download stage detects)."""
        return {"feature_dim": self.feature_dim, "feature_layout": self.feature_layout,
                "markers": list(self.markers) if self.markers else None, "transcript_dir": self.transcript_dir,
                "csv_columns": list(self.csv_columns), "label_format": self.label_format,
                "sample_submission": self.sample_submission, "test_order": self.test_order}

    def reconciled(self, detected: dict | None) -> Profile:
        """This profile with the facts detected from the data (download metrics "detected") in place of declared."""
        if not detected:
            return self
        values = {key: detected[key] for key in DETECTABLE if key in detected}
        for key in ("markers", "csv_columns"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        return dataclasses.replace(self, **values)


PROFILES: dict[str, Profile] = {}


def register(profile: Profile) -> Profile:
    assert profile.name not in PROFILES, profile.name
    unknown = set(profile.conflicts) - set(DETECTABLE) - {"metric", "symbols", "param_limit"}
    assert not unknown, f"{profile.name}: conflicts {unknown}"
    PROFILES[profile.name] = profile
    return profile


# ---- embedded demo competitions (their data is committed under pipeline/demo_data/) ------------------------------
# Every demo is also judged on speakers whose accents it never hears (pipeline/demo_data/heldout-accents/README.md).
DEMO_HELDOUT = DEMO_DATA / "heldout-accents" / "heldout-accents.zip"

register(Profile(
    name="demo-hw1p2", family="hw1p2", semester="demo (F24 layout)", slug="demo-hw1p2", feature_dir="mfcc",
    feature_dim=28, transcript_dir="transcript", markers=("[SOS]", "[EOS]"), symbols=tuple(HW1P2_PHONEMES),
    csv_columns=("id", "label"), label_format="phoneme", metric="accuracy", metric_direction="max",
    param_limit=20_000_000, demo=True, heldout=DEMO_HELDOUT,
))
register(Profile(
    name="demo-hw3p2", family="hw3p2", semester="demo (F25 layout)", slug="demo-hw3p2", feature_dir="mfcc",
    feature_dim=28, transcript_dir="transcript", markers=("[SOS]", "[EOS]"), symbols=tuple(HW3P2_PHONEMES),
    csv_columns=("index", "label"), label_format="chars", metric="levenshtein", metric_direction="min",
    param_limit=20_000_000, demo=True, heldout=DEMO_HELDOUT,
))
register(Profile(
    name="demo-hw4p2", family="hw4p2", semester="demo (F23 MFCC layout)", slug="demo-hw4p2", feature_dir="mfcc",
    feature_dim=28, transcript_dir="transcript", markers=("[SOS]", "[EOS]"), symbols=tuple(HW4P2_VOCAB),
    csv_columns=("index", "label"), label_format="text", metric="levenshtein", metric_direction="min",
    param_limit=30_000_000, demo=True, specials=(("pad", "<pad>"), ("sos", "<sos>"), ("eos", "<eos>")),
    heldout=DEMO_HELDOUT,
))


# ---- HW1P2: frame-level phoneme classification (docs/formats.md §1) ----------------------------------------------

def _hw1p2(semester: str, slug: str | None, dim: int, *, old: bool = False, label_format: str = "phoneme",
           param_limit: int | None = None, **extra) -> Profile:
    """old=True: the S22/F22 spelling ('SIL', '<sos>'/'<eos>')."""
    return register(Profile(
        name=f"hw1p2-{semester.lower()}", family="hw1p2", semester=semester, slug=slug, feature_dir="mfcc",
        feature_dim=dim, transcript_dir="transcript", markers=("<sos>", "<eos>") if old else ("[SOS]", "[EOS]"),
        symbols=tuple(HW1P2_PHONEMES_S22 if old else HW1P2_PHONEMES), csv_columns=("id", "label"),
        label_format=label_format, metric="accuracy", metric_direction="max", param_limit=param_limit, **extra))


_hw1p2("S22", "11-785-s22-hw1p2", 13, old=True, label_format="int", data_name="hw1p2_student_data",
       test_order="test_order.csv", conflicts=("test_order",), sources="NB-S22-1")
_hw1p2("F22", "11-785-f22-hw1p2", 15, old=True, label_format="int", param_limit=20_000_000,
       sources="W-F22-1; NB-F22-1")
_hw1p2("S23", "11-785-s23-hw1p2", 27, label_format="int",
       conflicts=("feature_dim", "markers", "label_format", "csv_columns", "param_limit"),
       sources="slug only (id 1472612559); 27-d assumed from S23 HW3P2/HW4P2")
_hw1p2("F23", None, 28, label_format="int", param_limit=25_000_000, sources="W-F23-1")
_hw1p2("S24", "11785-hw1p2-s24", 27, label_format="phoneme", param_limit=24_000_000,
       conflicts=("label_format",), sources="W-S24-1 (int) vs NB-S24-1 (phoneme strings)")
_hw1p2("F24", "11785-hw1p2-f24", 28, param_limit=20_000_000, sources="W-F24-1; NB-F24-1")
_hw1p2("S25", "11785-spring-25-hw-1-p-2", 28, conflicts=("label_format",), sources="id 36824254777 (slug)")
_hw1p2("S26", "hw-1-p-2-spring-2026-student-competition", 28, param_limit=20_000_000,
       slack_slug="hw-1-p-2-spring-2026-student-slack-submission", sources="W-S26-1; NB-S26-1")


# ---- HW3P2: utterance-level phoneme recognition, CTC (docs/formats.md §2) -----------------------------------------

def _hw3p2(semester: str, slug: str | None, dim: int, columns: tuple[str, str], *, s22: bool = False,
           **extra) -> Profile:
    return register(Profile(
        name=f"hw3p2-{semester.lower()}", family="hw3p2", semester=semester, slug=slug, feature_dir="mfcc",
        feature_dim=dim, transcript_dir=extra.pop("transcript_dir", "transcript"),
        markers=("<sos>", "<eos>") if s22 else ("[SOS]", "[EOS]"),
        symbols=tuple(HW3P2_PHONEMES_S22 if s22 else HW3P2_PHONEMES),
        char_labels=tuple(HW3P2_LABELS_S22 if s22 else HW3P2_LABELS), csv_columns=columns, label_format="chars",
        metric="levenshtein", metric_direction="min", param_limit=extra.pop("param_limit", 20_000_000), **extra))


_hw3p2("S22", "11-785-s22-hw3p2", 13, ("id", "predictions"), s22=True, partitions=("train", "dev", "test"),
       data_name="hw3p2_student_data", test_order="test_order.csv", param_limit=None, conflicts=("test_order",),
       sources="NB-S22-3")
_hw3p2("F22", "11-785-f22-hw3p2", 15, ("id", "predictions"), transcript_dir="transcript/raw",
       sample_submission="random_submission.csv", conflicts=("csv_columns",), sources="W-F22-3; NB-F22-3")
_hw3p2("S23", "11-785-s23-hw3p2", 27, ("id", "predictions"), conflicts=("transcript_dir", "csv_columns"),
       sources="W-S23-3; NB-S23-3")
_hw3p2("F23", "11-785-f23-hw3p2", 28, ("index", "label"), conflicts=("csv_columns", "sample_submission"),
       sources="id 5926345383")
_hw3p2("S24", "hw3p2asr-s24", 27, ("index", "label"), data_name="11-785-s24-hw3p2",
       sample_submission="random_submission.csv", conflicts=("csv_columns",), sources="NB-S24-3")
_hw3p2("F24", None, 28, ("index", "label"), data_name="11785-f24-hw3p2", conflicts=("sample_submission",),
       sources="NB-F24-3")
_hw3p2("F25", "11785-hw-3-p-2-speech-recognition-fall-2025", 28, ("index", "label"),
       slack_slug="11785-hw-3-p-2-fall-2025-slack", conflicts=("sample_submission",), sources="NB-F25-3")


# ---- HW4P2: attention-based character ASR (docs/formats.md §3) ----------------------------------------------------

_SPECIALS_MFCC = (("pad", "<pad>"), ("sos", "<sos>"), ("eos", "<eos>"))
_SPECIALS_F24 = (("pad", "<|padding|>"), ("sos", "<|endoftext|>"), ("eos", "<|endoftext|>"), ("unk", "<|unknown|>"))
_SPECIALS_S25 = (("pad", "[PAD]"), ("sos", "[SOS]"), ("eos", "[EOS]"), ("unk", "[UNK]"), ("mask", "[MASK]"),
                 ("blank", "[BLANK]"))


def _hw4p2(semester: str, slug: str | None, columns: tuple[str, str], *, feature_dir: str = "mfcc", dim: int,
           vocab: list[str], specials, markers=("[SOS]", "[EOS]"), transcript_dir: str = "transcripts",
           metric: str = "levenshtein", **extra) -> Profile:
    return register(Profile(
        name=f"hw4p2-{semester.lower()}", family="hw4p2", semester=semester, slug=slug, feature_dir=feature_dir,
        feature_dim=dim, transcript_dir=transcript_dir, markers=markers, symbols=tuple(vocab), specials=specials,
        csv_columns=columns, label_format="text", metric=metric, metric_direction="min",
        param_limit=extra.pop("param_limit", None), **extra))


_hw4p2("S22", "11-785-s22-hw4p2", ("id", "label"), dim=13, vocab=HW4P2_VOCAB_S22,
       specials=(("sos", "<sos>"), ("eos", "<eos>")), markers=("<sos>", "<eos>"), transcript_dir="transcript",
       partitions=("train", "dev", "test"), data_name="hw4p2_student_data", test_order="test_order.csv",
       conflicts=("test_order", "csv_columns"), sources="NB-S22-4")
_hw4p2("F22", "11-785-f22-hw4p2", ("id", "label"), dim=15, vocab=HW4P2_VOCAB_S22,
       specials=(("sos", "<sos>"), ("eos", "<eos>")), markers=("<sos>", "<eos>"),
       conflicts=("markers", "transcript_dir"), sources="W-F22-4; NB-F22-4")
_hw4p2("S23", "11-785-s23-hw4p2", ("id", "label"), dim=27, vocab=HW4P2_VOCAB, specials=_SPECIALS_MFCC,
       conflicts=("markers", "csv_columns"), sources="W-S23-4")
_hw4p2("F23", None, ("index", "label"), dim=28, vocab=HW4P2_VOCAB, specials=_SPECIALS_MFCC,
       data_name="11-785-f23-hw4p2", conflicts=("feature_dim", "csv_columns"), sources="NB-F23-4 (27/28 unchecked)")
_hw4p2("S24", "hw4p2-sp24", ("index", "label"), dim=27, vocab=HW4P2_VOCAB, specials=_SPECIALS_MFCC,
       data_name="11-785s24-hw4p2", slack_slug="automatic-speech-recognition-hw4p2-slack", sources="NB-S24-4")
_hw4p2("F24", None, ("Index", "Labels"), feature_dir="fbank", dim=FBANK_DIM, vocab=HW4P2_VOCAB_F24,
       specials=_SPECIALS_F24, markers=None, transcript_dir="text", feature_layout="FT", data_name="hw4p2",
       conflicts=("feature_layout", "markers", "csv_columns", "metric"), sources="NB-F24-4")
_hw4p2("S25", None, ("id", "transcription"), feature_dir="fbank", dim=FBANK_DIM, vocab=HW4P2_VOCAB_S25,
       specials=_SPECIALS_S25, markers=None, transcript_dir="text", feature_layout="FT", metric="cer",
       data_name="hw4p2_data", conflicts=("feature_layout", "markers", "metric"),
       sources="NB-S25-4 (Kaggle dataset cmu11785/s25-hw4-data)")
_hw4p2("F25", "11-785-hw-4-p-2-automatic-speech-recognition-f-25", ("id", "transcription"), feature_dir="fbank",
       dim=FBANK_DIM, vocab=HW4P2_VOCAB_S25, specials=_SPECIALS_S25, markers=None, transcript_dir="text",
       feature_layout="FT", metric="cer", data_name="hw4p2_data", param_limit=30_000_000,
       conflicts=("feature_layout", "markers", "metric"), sources="NB-F25-4")
_hw4p2("S26", "11785-hw-4-p-2-asr-with-transformer-spring-2026", ("id", "transcription"), feature_dir="fbank",
       dim=FBANK_DIM, vocab=HW4P2_VOCAB_S25, specials=_SPECIALS_S25, markers=None, transcript_dir="text",
       feature_layout="FT", metric="cer", data_name="hw4p2_data", param_limit=30_000_000,
       slack_slug="11785-hw-4-p-2-asr-with-transformer-spring-2026-slack",
       conflicts=("feature_dim", "feature_layout", "markers", "csv_columns", "metric", "param_limit"),
       sources="id 52862141337 (slug only; the rest assumed as F25)")

# A task family resolves to its latest known real profile.
FAMILY_DEFAULT: dict[str, str] = {"hw1p2": "hw1p2-s26", "hw3p2": "hw3p2-f25", "hw4p2": "hw4p2-s26"}


class UnknownTask(AsrpipeError, ValueError):
    pass


def resolve_profile(task: str) -> Profile:
    key = task.strip()
    if key in PROFILES:
        return PROFILES[key]
    if key.lower() in PROFILES:
        return PROFILES[key.lower()]
    if key in FAMILY_DEFAULT:
        return PROFILES[FAMILY_DEFAULT[key]]
    for field in ("slug", "slack_slug", "data_name"):  # a data folder name may be shared: then it is ambiguous
        matches = [p for p in PROFILES.values() if key and getattr(p, field) == key]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise UnknownTask(f"--task {task}: the data folder of {', '.join(p.name for p in matches)}; "
                              f"name the profile instead")
    known = ", ".join(sorted(FAMILY_DEFAULT) + sorted(PROFILES))
    raise UnknownTask(f"--task {task}: unknown task (known: {known}; or a Kaggle slug, see `asrpipe competitions`)")
