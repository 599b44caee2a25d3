"""The synthetic sound world: event classes, captioned clips with ground truth, scenes, oracle."""

from training.world.clips import CLIP_SAMPLES, CLIP_SECONDS, ClipSpec, ClipTruth, make_clip
from training.world.events import EVENT_IDS, EVENTS

__all__ = ["CLIP_SAMPLES", "CLIP_SECONDS", "ClipSpec", "ClipTruth", "EVENTS", "EVENT_IDS", "make_clip"]
