"""Teacher words: vocabulary words the frozen MiniLM places near one group of the world's training texts.

The mini models only ever see the world's training wording, while people (and the held-out split) use
other words. MiniLM knows English: a vocabulary word whose sentence embedding ("a WORD", mean-pooled as
all-MiniLM-L6-v2 is trained) is close to one group's training texts, and clearly closer than to any other
group's, is a wording of that group. Two users:
- the rewriter, whose groups are scenes (made-up scene descriptions, `training.train_rewriter`);
- BATON feedback prompts, whose groups are events (`tta data build --wording teacher`): clips generated
  for "a canine, then the chapels" and labelled by what is heard teach the generator words outside its
  captions.
Held-out texts are never consulted, and held-out words are removed from the vocabulary beforehand.
"""

from __future__ import annotations

import re

import numpy as np

from services.clauses import sentence_embeddings
from services.text_encoder import MINILM, resolve_location
from services.wording import KnownWording, KnownWordingConfig
from training.world.captions import EVENT_PHRASINGS, heldout_fragments, template_words

# An event's teacher words: "a WORD" within this cosine of one of the event's training phrasings, this much
# closer than to any other event's, at most this many (most similar first). Chosen by reading the lists:
# at 0.5 / 0.05 every event has 7-54 words and the first dozen are mostly the sound's source ("canine",
# "sparrow", "guitarist"); further down they drift ("necklace" for bell).
EVENT_MIN_SIMILARITY, EVENT_MIN_MARGIN, EVENT_MAX_WORDS = 0.5, 0.05, 12


def heldout_words() -> set[str]:
    """Every word of the world's held-out phrasings and templates."""
    return {w for fragment in heldout_fragments() for w in re.findall(r"[a-z]+", fragment)}


def shares_heldout_stem(word: str, banned: set[str]) -> bool:
    """True when `word` may be a form of a held-out word ("yap" or "yapping" of "yaps"): they share the
    first min(4, len - 1) letters of a held-out word of 4+ letters. Crude and on the safe side: it also
    drops unrelated words ("chimney" for "chimes"), never a form that leaks."""
    return any(len(h) >= 4 and word.startswith(h[: min(4, len(h) - 1)]) for h in banned)


def vocabulary_words(tokenizer) -> list[str]:
    """Whole lower-case words of the tokenizer's vocabulary (3+ letters), minus every word of the world's
    held-out phrasings, which evaluations keep unseen."""
    banned = heldout_words()
    return sorted(t for t in tokenizer.get_vocab() if re.fullmatch(r"[a-z]{3,}", t) and t not in banned)


def without_heldout_forms(words: list[str]) -> list[str]:
    """`words` minus held-out words and every word that may be a form of one (`shares_heldout_stem`)."""
    banned = heldout_words()
    return [w for w in words if w not in banned and not shares_heldout_stem(w, banned)]


def caption_words() -> set[str]:
    """Every word of the world's event phrasings (training and held-out) and caption templates."""
    texts = [t for p in EVENT_PHRASINGS.values() for t in (*p.clauses, *p.nouns, *p.heldout_clauses, *p.heldout_nouns)]
    return {w for t in texts for w in re.findall(r"[a-z]+", t)} | template_words()


def nearest_group_words(words: list[str], groups: dict[str, list[str]], min_similarity: float, min_margin: float, max_words: int | None = None) -> dict[str, list[str]]:
    """Group id -> the words whose "a WORD" embedding is within `min_similarity` of one of the group's texts and
    beats every other group by `min_margin`; most similar first, at most `max_words`. Caption words
    ("thunder", "bell") are never teacher words: they already have their meaning."""
    from services.text_encoder import TextEncoder

    words = [w for w in words if w not in caption_words()]
    ids = list(groups)
    group_of_row = np.array([k for k, g in enumerate(ids) for _ in groups[g]])
    encoder = TextEncoder.from_pretrained(MINILM)
    sim = (sentence_embeddings(encoder, [f"a {w}" for w in words]) @ sentence_embeddings(encoder, [t for g in ids for t in groups[g]]).T).numpy()
    per_group = np.stack([sim[:, group_of_row == k].max(1) for k in range(len(ids))], 1)
    ranked = np.sort(per_group, 1)
    best, top, margin = per_group.argmax(1), ranked[:, -1], ranked[:, -1] - ranked[:, -2]
    chosen = {}
    for k, group in enumerate(ids):
        idx = np.where((best == k) & (top >= min_similarity) & (margin >= min_margin))[0]
        chosen[group] = [words[i] for i in idx[np.argsort(-top[idx], kind="stable")]][:max_words]
    return chosen


def minilm_vocabulary() -> list[str]:
    """Teacher-word candidates for events: MiniLM's vocabulary without held-out words or their forms."""
    from transformers import AutoTokenizer

    return without_heldout_forms(vocabulary_words(AutoTokenizer.from_pretrained(resolve_location(MINILM))))


def teacher_event_words(words: list[str] | None = None) -> dict[str, list[str]]:
    """Event id -> its teacher words, judged against the event's training phrasings only (~20 s on a CPU for
    the whole vocabulary). Held-out words and their forms are never among them, whatever `words` holds."""
    words = minilm_vocabulary() if words is None else without_heldout_forms(words)
    groups = {e: [*p.clauses, *p.nouns] for e, p in EVENT_PHRASINGS.items()}
    return nearest_group_words(words, groups, EVENT_MIN_SIMILARITY, EVENT_MIN_MARGIN, EVENT_MAX_WORDS)


def world_known_wording() -> KnownWordingConfig:
    """The known wording of every mini judge: each event's training phrasings (clauses and nouns), never a
    held-out one, compared by MiniLM with the teacher-word thresholds (chosen on training words before the
    judges read prompts through it)."""
    phrasings = {e: [*p.clauses, *p.nouns] for e, p in EVENT_PHRASINGS.items()}
    return KnownWordingConfig(phrasings=phrasings, encoder=MINILM, min_similarity=EVENT_MIN_SIMILARITY, min_margin=EVENT_MIN_MARGIN)


def leave_one_out(config: KnownWordingConfig, encoder=None) -> dict[str, float]:
    """How a known wording treats a phrasing it does not hold, measured on its own phrasings: each is taken out
    in turn and reworded by the rest. `reworded`: share of phrasings replaced (close and clearly one sound's);
    `right_sound`: share of those replaced by a phrasing of their own sound."""
    reworded = right = 0
    for sound, texts in config.phrasings.items():
        for text in texts:
            rest = {s: [t for t in ts if t != text] for s, ts in config.phrasings.items()}
            rest = {s: ts for s, ts in rest.items() if ts}
            wording = KnownWording(config.model_copy(update={"phrasings": rest}), encoder)
            new = wording.reword(text)
            if new != text:
                reworded += 1
                right += new in config.phrasings[sound]
    total = sum(len(t) for t in config.phrasings.values())
    return {"phrasings": total, "reworded": reworded / total, "right_sound": right / max(reworded, 1)}
