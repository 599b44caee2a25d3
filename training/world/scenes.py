"""Open prompts: scene descriptions mapped to distributions of event sets.

A scene names the events that plausibly occur there, with weights; sampling a scene draws 2-3 of
them. The rewriter (a later issue) learns to turn "a farmyard" into a caption the generator knows.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Scene:
    id: str
    descriptions: tuple[str, ...]  # open prompts a user might type
    heldout_descriptions: tuple[str, ...]
    events: dict[str, float]  # event id -> weight


SCENES: tuple[Scene, ...] = (
    Scene("rainy_street", ("a rainy street at night", "a city street in the rain", "traffic on a rainy evening", "a drizzly road in the city"), ("a wet night downtown", "puddles on the high street", "an umbrella crowd on the avenue"), {"rain": 3, "car_horn": 2, "footsteps": 2, "engine_idle": 2, "thunder": 1}),
    Scene("farmyard", ("a farmyard", "a farm in the morning", "a farm with animals", "a dairy farm"), ("a barnyard at dawn", "a rural homestead", "the cattle shed at milking time"), {"cow_moo": 3, "dog_bark": 2, "bird_chirp": 2, "cat_meow": 1}),
    Scene("living_room", ("a quiet living room", "at home in the evening", "a sitting room at home", "a quiet house"), ("a cosy lounge", "a family den after dinner", "an apartment on a calm afternoon"), {"clock_tick": 3, "cat_meow": 2, "phone_ring": 2, "door_knock": 2}),
    Scene("park", ("a park in spring", "a walk in the park", "dog walkers in the park", "a green park on a weekend"), ("a sunny public garden", "a stroll among the trees", "the meadow by the pond"), {"bird_chirp": 3, "dog_bark": 2, "whistle": 1, "footsteps": 2}),
    Scene("emergency", ("an emergency on the highway", "a traffic accident", "an ambulance rushing through traffic", "a road accident"), ("a crash on the motorway", "paramedics arriving at a collision", "a pile-up at rush hour"), {"siren": 3, "car_horn": 2, "engine_idle": 2}),
    Scene("village_church", ("a village church on sunday", "a church square", "church bells in a small village", "an old church on a summer morning"), ("a chapel at noon", "a wedding at the cathedral", "the steeple above the hamlet"), {"bell": 3, "bird_chirp": 2, "footsteps": 1}),
    Scene("thunderstorm", ("a thunderstorm", "a stormy night", "a storm with heavy rain", "lightning and rain at night"), ("a tempest outside", "bad weather rolling in", "a gale lashing the windows"), {"thunder": 3, "rain": 3, "dog_bark": 1}),
    Scene("office", ("a busy office", "an office in the afternoon", "a noisy office", "a busy reception desk"), ("a workplace at lunchtime", "a call centre", "cubicles on a monday"), {"phone_ring": 3, "door_knock": 2, "footsteps": 2, "clock_tick": 1}),
    Scene("busker", ("a street musician", "a busker in the city", "music on a city corner", "a guitarist playing in the street"), ("a performer on the pavement", "a troubadour at the market", "a singer in the subway"), {"guitar": 3, "footsteps": 2, "car_horn": 1, "whistle": 1}),
    Scene("sports_field", ("a football match", "a sports field", "a soccer game", "a match at the stadium"), ("a playing field on saturday", "a rugby training session", "the referee at a kickoff"), {"whistle": 3, "footsteps": 2, "dog_bark": 1}),
)
SCENE_BY_ID = {s.id: s for s in SCENES}


def sample_scene_events(scene: Scene, rng: np.random.Generator, k: int, allowed: Callable[[list[str]], bool] = lambda events: True) -> list[str]:
    """k of the scene's events (weighted, in random order) forming a set that `allowed` accepts.

    Falls back to fewer events (never below 2) when no k-set is allowed.
    """
    for size in range(min(k, len(scene.events)), 1, -1):
        sets = [list(c) for c in itertools.combinations(scene.events, size) if allowed(list(c))]
        if sets:
            w = np.array([np.prod([scene.events[e] for e in c]) for c in sets], dtype=float)
            chosen = sets[int(rng.choice(len(sets), p=w / w.sum()))]
            return [chosen[i] for i in rng.permutation(len(chosen))]
    raise ValueError(f"scene {scene.id!r} has no allowed set of 2 or more events")
