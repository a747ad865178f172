"""Seeded generator of short, plausible English sentences for the demo competitions.

No corpus is needed: a few hundred words in part-of-speech lists and a handful of templates.
Transcripts are UPPERCASE letters, spaces and apostrophes, like LibriSpeech.
Used by tools/make_demo.py; see that module's docstring for the regeneration command.
"""

from __future__ import annotations

import random
import re

NAMES = """MARY JOHN ANNA PETER SARAH THOMAS EMMA DAVID LUCY HENRY ALICE GEORGE MARTHA JAMES
HELEN ROBERT RUTH WILLIAM GRACE EDWARD""".split()

NOUNS = """DOG CAT BIRD HORSE FARMER TEACHER DOCTOR CHILD GIRL BOY WOMAN MAN CAPTAIN KING QUEEN
SOLDIER SAILOR BAKER DRIVER STUDENT FRIEND NEIGHBOR BROTHER SISTER MOTHER FATHER GARDEN RIVER
HOUSE WINDOW DOOR TABLE CHAIR BOOK LETTER ROAD BRIDGE FOREST MOUNTAIN VILLAGE CITY MARKET CHURCH
SCHOOL KITCHEN FIELD BOAT SHIP TRAIN WAGON LAMP CANDLE FIRE STONE APPLE BREAD CHEESE COFFEE
PAPER PICTURE SONG STORY BOX BASKET HAT COAT SHOE RING CLOCK BELL KEY BALL MAP FLOWER TREE
CLOUD STORM HILL LAKE ISLAND CASTLE TOWER WALL GATE FENCE BARN SHEEP COW PIG FOX WOLF BEAR
RABBIT FISH MOUSE HAMMER KNIFE SPOON CUP BOTTLE BLANKET PILLOW PENCIL DESK CARPET LADDER ROPE
BUCKET CORNER STREET OFFICE STATION HARBOR""".split()

PLACES = """GARDEN RIVER HOUSE KITCHEN FIELD FOREST VILLAGE MARKET CHURCH SCHOOL BRIDGE ROAD HILL
LAKE CASTLE BARN STATION HARBOR STREET OFFICE""".split()

ADJECTIVES = """OLD YOUNG SMALL LARGE LITTLE BIG QUIET LOUD DARK BRIGHT COLD WARM HEAVY RED GREEN BLUE
YELLOW WHITE BLACK BROWN HAPPY TIRED ANGRY GENTLE STRANGE FAMOUS EMPTY BUSY CLEAN NARROW WIDE
TALL SHORT SOFT ROUGH SMOOTH SHARP FRESH SWEET BITTER PROUD CLEVER BRAVE HONEST CAREFUL LAZY
HUNGRY SILENT RICH POOR""".split()

PREDICATE_ADJECTIVES = """COLD WARM HAPPY TIRED ANGRY QUIET EMPTY BUSY CLEAN BROKEN READY LATE
FULL DIRTY AFRAID HUNGRY SAFE WRONG RIGHT STRANGE BEAUTIFUL""".split()

TRANSITIVE_PAST = """SAW FOUND TOOK CARRIED OPENED CLOSED PAINTED WATCHED FOLLOWED HELPED CALLED
VISITED BOUGHT SOLD BUILT CLEANED BROKE LOST KEPT HELD WASHED PUSHED PULLED DROPPED LIFTED
MOVED FIXED BROUGHT LEFT MISSED REMEMBERED NOTICED CHOSE WANTED LOVED""".split()

# (base form, past form) so negatives ("DIDN'T OPEN") and futures ("WILL OPEN") stay grammatical.
TRANSITIVE_BASE = """SEE FIND TAKE CARRY OPEN CLOSE PAINT WATCH FOLLOW HELP CALL VISIT BUY SELL BUILD
CLEAN BREAK LOSE KEEP HOLD WASH PUSH PULL DROP LIFT MOVE FIX BRING""".split()

INTRANSITIVE_PAST = """SLEPT WAITED LAUGHED SMILED WALKED RAN ARRIVED STOPPED SANG DANCED FELL SHOUTED
JUMPED RESTED STAYED WORKED PLAYED RETURNED WANDERED HURRIED""".split()

ADVERBS = """SLOWLY QUICKLY QUIETLY SUDDENLY EARLY AGAIN YESTERDAY TODAY TWICE OUTSIDE CAREFULLY
HAPPILY SOFTLY LOUDLY""".split()

PREPOSITIONS = """NEAR BEHIND UNDER OVER BESIDE ACROSS THROUGH INTO FROM TOWARD INSIDE AROUND""".split()

TIMES = ["IN THE MORNING", "AT NIGHT", "LAST WEEK", "BEFORE DINNER", "AFTER SCHOOL",
         "ON MONDAY", "ON SUNDAY", "IN THE EVENING", "LAST SUMMER", "THIS WINTER"]

PRONOUNS_SUBJECT = ["HE", "SHE", "WE", "THEY", "I", "YOU"]
POSSESSIVES = ["HIS", "HER", "OUR", "THEIR", "MY", "YOUR"]
NUMBERS = ["TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "TEN", "TWELVE"]


def plural(noun: str) -> str:
    """English plural of the nouns above (regular rules plus the few irregular ones in the list)."""
    irregular = {"CHILD": "CHILDREN", "WOMAN": "WOMEN", "MAN": "MEN", "SHEEP": "SHEEP", "FISH": "FISH",
                 "MOUSE": "MICE", "KNIFE": "KNIVES", "WOLF": "WOLVES", "SHOE": "SHOES"}
    if noun in irregular:
        return irregular[noun]
    if re.search(r"(S|X|SH|CH)$", noun):
        return noun + "ES"
    if re.search(r"[^AEIOU]Y$", noun):
        return noun[:-1] + "IES"
    return noun + "S"


def article(word: str) -> str:
    return "AN" if word[0] in "AEIOU" else "A"


def _noun_phrase(rng: random.Random, with_adjective: bool) -> str:
    noun = rng.choice(NOUNS)
    if with_adjective:
        adjective = rng.choice(ADJECTIVES)
        determiner = rng.choice(["THE", "THE", article(adjective), rng.choice(POSSESSIVES)])
        return f"{determiner} {adjective} {noun}"
    return f"{rng.choice(['THE', 'THE', article(noun), rng.choice(POSSESSIVES)])} {noun}"


def _subject(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.3:
        return rng.choice(NAMES)
    if kind < 0.5:
        return rng.choice(PRONOUNS_SUBJECT)
    return _noun_phrase(rng, with_adjective=rng.random() < 0.5)


TEMPLATES = [
    lambda r: f"{_subject(r)} {r.choice(TRANSITIVE_PAST)} {_noun_phrase(r, r.random() < 0.5)}",
    lambda r: f"{_subject(r)} {r.choice(INTRANSITIVE_PAST)} {r.choice(ADVERBS)}",
    lambda r: f"{_subject(r)} {r.choice(INTRANSITIVE_PAST)} {r.choice(PREPOSITIONS)} THE {r.choice(PLACES)}",
    lambda r: f"THE {r.choice(NOUNS)} WAS {r.choice(PREDICATE_ADJECTIVES)} {r.choice(TIMES)}",
    lambda r: f"{r.choice(NAMES)}'S {r.choice(NOUNS)} WAS {r.choice(PREDICATE_ADJECTIVES)}",
    lambda r: f"{r.choice(NAMES)} DIDN'T {r.choice(TRANSITIVE_BASE)} THE {r.choice(NOUNS)}",
    lambda r: f"{r.choice(PRONOUNS_SUBJECT)} WILL {r.choice(TRANSITIVE_BASE)} {_noun_phrase(r, False)} {r.choice(TIMES)}",
    lambda r: f"THERE WERE {r.choice(NUMBERS)} {plural(r.choice(NOUNS))} {r.choice(PREPOSITIONS)} THE {r.choice(PLACES)}",
    lambda r: f"IT'S A {r.choice(ADJECTIVES)} {r.choice(NOUNS)}",
    lambda r: f"{r.choice(NAMES)} AND {r.choice(NAMES)} {r.choice(INTRANSITIVE_PAST)} {r.choice(TIMES)}",
    lambda r: f"I THINK THE {r.choice(NOUNS)} IS {r.choice(PREDICATE_ADJECTIVES)}",
    lambda r: f"{_subject(r)} {r.choice(TRANSITIVE_PAST)} THE {r.choice(NOUNS)} {r.choice(PREPOSITIONS)} THE {r.choice(PLACES)}",
    lambda r: f"WE DON'T {r.choice(TRANSITIVE_BASE)} {plural(r.choice(NOUNS))} {r.choice(TIMES)}",
    lambda r: f"THE {plural(r.choice(NOUNS))} {r.choice(INTRANSITIVE_PAST)} {r.choice(ADVERBS)}",
    lambda r: f"{r.choice(POSSESSIVES)} {r.choice(NOUNS)} WASN'T {r.choice(PREDICATE_ADJECTIVES)}",
]


def _tidy(sentence: str) -> str:
    """Pick A or AN by the next word and collapse spaces."""
    sentence = re.sub(r"\b(A|AN) ([A-Z]+)", lambda m: f"{article(m.group(2))} {m.group(2)}", sentence)
    return " ".join(sentence.split())


def sentence_stream(seed: int):
    """Yield distinct sentences forever (deterministic for a seed)."""
    rng = random.Random(seed)
    seen: set[str] = set()
    while True:
        sentence = _tidy(rng.choice(TEMPLATES)(rng))
        if sentence not in seen:
            seen.add(sentence)
            yield sentence


def vocabulary() -> set[str]:
    """Every word the templates can emit (for the README's word count)."""
    words: set[str] = set()
    for group in (NAMES, NOUNS, PLACES, ADJECTIVES, PREDICATE_ADJECTIVES, TRANSITIVE_PAST, TRANSITIVE_BASE,
                  INTRANSITIVE_PAST, ADVERBS, PREPOSITIONS, PRONOUNS_SUBJECT, POSSESSIVES, NUMBERS):
        words.update(group)
    words.update(plural(n) for n in NOUNS)
    words.update(f"{n}'S" for n in NAMES)
    for time in TIMES:
        words.update(time.split())
    words.update("THE A AN WAS WERE IS IT'S DIDN'T DON'T WASN'T WILL THERE AND I THINK WE".split())
    return words
