"""Caption phrasings and relation templates, with the held-out sets training never sees.

An event has clause phrasings ("a dog barks") and noun phrasings ("a barking dog"); a template
joins them. Every event and every template keeps at least one phrasing out of training, so an
evaluation can ask whether a model understood the relation or memorised the words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Relation = Literal["single", "sequence", "overlap"]
RELATIONS: tuple[str, ...] = ("single", "sequence", "overlap")


@dataclass(frozen=True)
class Phrasings:
    clauses: tuple[str, ...]
    nouns: tuple[str, ...]
    heldout_clauses: tuple[str, ...]
    heldout_nouns: tuple[str, ...]


EVENT_PHRASINGS: dict[str, Phrasings] = {
    "dog_bark": Phrasings(("a dog barks", "a dog is barking", "a dog barks loudly"), ("a barking dog", "a dog barking", "dog barks"), ("a hound yaps",), ("the yapping of a hound",)),
    "bell": Phrasings(("a bell rings", "a church bell tolls", "a bell is ringing"), ("a ringing bell", "church bells", "the toll of a bell"), ("a bell chimes",), ("a chiming bell",)),
    "siren": Phrasings(("a siren wails", "a siren blares", "an emergency siren sounds"), ("a wailing siren", "a siren", "an ambulance siren"), ("a police siren howls",), ("the howl of a police siren",)),
    "car_horn": Phrasings(("a car horn honks", "a car honks", "a horn beeps"), ("a honking car horn", "car horns", "a car horn"), ("a driver toots the horn",), ("the toot of a horn",)),
    "bird_chirp": Phrasings(("a bird chirps", "birds are chirping", "a bird sings"), ("chirping birds", "a bird chirping", "birdsong"), ("a songbird tweets",), ("tweeting songbirds",)),
    "door_knock": Phrasings(("someone knocks on a door", "a door is knocked", "a person knocks"), ("knocking on a door", "a knock at the door", "door knocks"), ("somebody raps on the door",), ("rapping on wood",)),
    "rain": Phrasings(("rain falls", "it is raining", "rain pours down"), ("falling rain", "heavy rain", "rainfall"), ("a shower patters down",), ("a pattering shower",)),
    "engine_idle": Phrasings(("an engine idles", "a car engine is running", "a motor idles"), ("an idling engine", "engine noise", "a running motor"), ("a diesel engine rumbles",), ("the rumble of a diesel engine",)),
    "footsteps": Phrasings(("someone walks", "footsteps approach", "a person is walking"), ("footsteps", "walking footsteps", "steps on the floor"), ("a person strolls by",), ("the tread of feet",)),
    "clock_tick": Phrasings(("a clock ticks", "a clock is ticking", "a wall clock ticks"), ("a ticking clock", "clock ticks", "the ticking of a clock"), ("a pendulum clock tocks",), ("the tock of a pendulum",)),
    "phone_ring": Phrasings(("a phone rings", "a telephone is ringing", "a phone starts ringing"), ("a ringing phone", "a telephone ring", "phone rings"), ("a landline trills",), ("the trill of a landline",)),
    "whistle": Phrasings(("someone whistles", "a whistle blows", "a person whistles"), ("a whistle", "whistling", "a shrill whistle"), ("a referee blows a whistle",), ("a referee's whistle",)),
    "thunder": Phrasings(("thunder rumbles", "thunder roars", "thunder booms"), ("rolling thunder", "thunder", "a thunderclap"), ("a storm crashes overhead",), ("a crash of a storm",)),
    "cat_meow": Phrasings(("a cat meows", "a cat is meowing", "a kitten meows"), ("a meowing cat", "a cat meowing", "cat meows"), ("a kitty mews",), ("the mewing of a kitty",)),
    "cow_moo": Phrasings(("a cow moos", "a cow is mooing", "cattle moo"), ("a mooing cow", "cows mooing", "the moo of a cow"), ("a heifer lows",), ("the lowing of cattle",)),
    "guitar": Phrasings(("a guitar plays", "someone plucks a guitar", "a guitar is strummed"), ("an acoustic guitar", "guitar notes", "a plucked guitar"), ("a musician picks strings",), ("a picked melody on strings",)),
}

# Templates: {a}/{b}/{c} are clauses of the events in audio order, {na}/{nb}/{nc} noun phrasings.
# "after" is the relation whose text order is reversed: "{b} after {a}" still plays a first.
SEQUENCE2_TEMPLATES = ("{a}, then {b}", "{a}, followed by {nb}", "{a} before {b}", "{b} after {a}", "first {a}, then {b}")
SEQUENCE3_TEMPLATES = ("{a}, then {b}, then {c}", "first {a}, then {b}, and then {c}", "{a}, followed by {nb} and then {nc}", "{a}, then {b}, followed by {nc}")
OVERLAP_TEMPLATES = ("{a} while {b}", "{a} as {b}", "{a} with {nb} in the background")
SINGLE_TEMPLATES = ("{a}", "the sound of {na}", "{na}")

HELDOUT_SEQUENCE2_TEMPLATES = ("{a}, and afterwards {b}",)
HELDOUT_SEQUENCE3_TEMPLATES = ("{a}; after that {b}; finally {c}",)
HELDOUT_OVERLAP_TEMPLATES = ("{a}, and at the same time {b}",)
HELDOUT_SINGLE_TEMPLATES = ("one can hear {na}",)


def templates_for(relation: str, n_events: int, heldout: bool) -> tuple[str, ...]:
    if relation == "single":
        return HELDOUT_SINGLE_TEMPLATES if heldout else SINGLE_TEMPLATES
    if relation == "overlap":
        return HELDOUT_OVERLAP_TEMPLATES if heldout else OVERLAP_TEMPLATES
    if relation == "sequence" and n_events == 2:
        return HELDOUT_SEQUENCE2_TEMPLATES if heldout else SEQUENCE2_TEMPLATES
    if relation == "sequence" and n_events == 3:
        return HELDOUT_SEQUENCE3_TEMPLATES if heldout else SEQUENCE3_TEMPLATES
    raise ValueError(f"no templates for relation {relation!r} with {n_events} events")


def text_order(template: str, n_events: int) -> list[int]:
    """Indices (into audio order) of the events as the caption mentions them."""
    slots = [("a", "na"), ("b", "nb"), ("c", "nc")][:n_events]
    positions = []
    for i, (clause, noun) in enumerate(slots):
        pos = [template.find("{" + s + "}") for s in (clause, noun)]
        positions.append((min(p for p in pos if p >= 0), i))
    return [i for _, i in sorted(positions)]


def render_caption(template: str, clauses: list[str], nouns: list[str]) -> str:
    keys = {}
    for name, clause, noun in zip("abc", clauses, nouns):
        keys[name], keys["n" + name] = clause, noun
    text = template.format(**keys)
    return text[0].lower() + text[1:]


def heldout_fragments() -> list[str]:
    """Literal words that occur only in held-out phrasings (used to prove training never sees them)."""
    frags = []
    for p in EVENT_PHRASINGS.values():
        frags += list(p.heldout_clauses) + list(p.heldout_nouns)
    for tpl in HELDOUT_SEQUENCE2_TEMPLATES + HELDOUT_SEQUENCE3_TEMPLATES + HELDOUT_OVERLAP_TEMPLATES + HELDOUT_SINGLE_TEMPLATES:
        for piece in tpl.replace("{", "|{").replace("}", "}|").split("|"):
            piece = piece.strip(" ,;")
            if piece and not piece.startswith("{") and piece not in ("then", "and"):
                frags.append(piece)
    return frags


def template_words() -> frozenset[str]:
    """Every word the relation templates (training and held-out) put around the event phrasings."""
    templates = SEQUENCE2_TEMPLATES + SEQUENCE3_TEMPLATES + OVERLAP_TEMPLATES + SINGLE_TEMPLATES + HELDOUT_SEQUENCE2_TEMPLATES + HELDOUT_SEQUENCE3_TEMPLATES + HELDOUT_OVERLAP_TEMPLATES + HELDOUT_SINGLE_TEMPLATES
    return frozenset(w for tpl in templates for w in re.findall(r"[a-z]+", re.sub(r"\{\w+\}", " ", tpl)))


def mentioned_events(text: str) -> list[str]:
    """Events a caption names through any of their phrasings (train or held-out), in text order.

    A text-level reading of a rewrite: which sounds it asks for. Longest phrasings match first, so
    "a church bell tolls" is one mention, not two."""
    low = " " + " ".join(text.lower().split()) + " "
    spans: list[tuple[int, int, str]] = []
    phrases = sorted(((ph, e) for e, p in EVENT_PHRASINGS.items() for ph in p.clauses + p.nouns + p.heldout_clauses + p.heldout_nouns), key=lambda x: -len(x[0]))
    for phrase, event in phrases:
        start = low.find(phrase)
        while start >= 0:
            end = start + len(phrase)
            whole_words = not low[start - 1].isalnum() and not low[end].isalnum()
            if whole_words and not any(s < end and start < e for s, e, _ in spans):
                spans.append((start, end, event))
            start = low.find(phrase, end)
    ordered = [e for _, _, e in sorted(spans)]
    return list(dict.fromkeys(ordered))
