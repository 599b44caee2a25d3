"""Known wording: a judge reads each clause of a prompt in the words it was trained on.

The mini CLAP and reward head learned the world's training phrasings and nothing else. A prompt that names a
sound by other words ("a hound yaps") gives a text embedding they never learned to place: on such prompts the
served picker takes 10 of the 26.5 points any-of-4 allows on temporal, against all of them on prompts in training
words (docs/results/rerank/by-wording). MiniLM, pretrained on paraphrases, places most such clauses nearest a
training phrasing of the same sound, as the generator's clause channels already rely on (services.clauses). So a
judge may read the prompt with each clause (`services.clauses.split_clauses`) replaced by its nearest known
phrasing, when that phrasing is close (cosine >= min_similarity) and clearly closer than every other sound's
(by min_margin); a clause that is not keeps its own words, so nothing is reworded on a guess.

A known wording is its own checkpoint directory (`known_wording.json`, written by `tta train wording`; the shipped
one is services/checkpoints/wording): the phrasings, grouped by sound, that the judges were trained on, the encoder
that compares them, and the two thresholds. It is not kept in the CLAP directory, whose MANIFEST hash names the
CLAP a reward head was trained on. A reranker without one reads prompts as they are.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.clauses import sentence_embeddings, split_clauses
from services.modeling import CheckpointError
from services.text_encoder import MINILM, TextEncoder

WORDING_NAME = "known_wording.json"
REWORD_CACHE_SIZE = 4096  # a served replica sees endless new prompts: keep only the most recent rewordings


class KnownWordingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    phrasings: dict[str, list[str]] = Field(min_length=2)  # sound -> the phrasings the judge was trained on
    encoder: str = MINILM  # the sentence encoder that compares clauses (mean-pooled, as MiniLM is trained)
    min_similarity: float = Field(0.5, ge=-1, le=1)
    min_margin: float = Field(0.05, ge=0, le=2)


class KnownWording:
    """Rewords a text clause by clause into the judge's known phrasings (see the module docstring)."""

    def __init__(self, config: KnownWordingConfig, encoder: TextEncoder | None = None) -> None:
        if any(not texts for texts in config.phrasings.values()):
            raise ValueError("every sound of a known wording needs at least one phrasing")
        self.config = config
        self.encoder = encoder if encoder is not None else TextEncoder.from_pretrained(config.encoder)
        self.phrasings = [t for texts in config.phrasings.values() for t in texts]
        self.sound_of = np.array([k for k, texts in enumerate(config.phrasings.values()) for _ in texts])
        self.known = sentence_embeddings(self.encoder, self.phrasings).numpy()
        self._cache: OrderedDict[str, str] = OrderedDict()

    @classmethod
    def from_pretrained(cls, directory: str | Path, encoder: TextEncoder | None = None) -> KnownWording:
        """The known wording in a directory (a `tta train wording` output). `encoder` reuses a loaded MiniLM."""
        path = Path(directory) / WORDING_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{directory}: no {WORDING_NAME} (write one with `tta train wording --out {directory}`)")
        try:
            config = KnownWordingConfig.model_validate_json(path.read_text())
        except ValidationError as exc:
            raise CheckpointError(f"{path}: {exc}") from exc
        return cls(config, encoder)

    def save_pretrained(self, directory: str | Path) -> Path:
        path = Path(directory) / WORDING_NAME
        path.write_text(json.dumps(self.config.model_dump(), indent=2) + "\n")
        return path

    def nearest(self, clauses: list[str]) -> list[str]:
        """Each clause's replacement: the nearest known phrasing when it is close and clearly one sound's, else
        the clause itself."""
        if not clauses:
            return []
        sim = sentence_embeddings(self.encoder, clauses).numpy() @ self.known.T  # [C, phrasings]
        out = []
        for row, clause in zip(sim, clauses):
            best = int(row.argmax())
            others = row[self.sound_of != self.sound_of[best]]
            close = row[best] >= self.config.min_similarity and row[best] - others.max() >= self.config.min_margin
            out.append(self.phrasings[best] if close else clause)
        return out

    def reword(self, text: str) -> str:
        """`text` with every clause replaced by its `nearest` phrasing; connectives and order stay as written."""
        if text in self._cache:
            self._cache.move_to_end(text)
            return self._cache[text]
        clauses = split_clauses(text)
        pieces, pos = [], 0
        for clause, new in zip(clauses, self.nearest([c.text for c in clauses])):
            pieces += [text[pos : clause.start], new]
            pos = clause.end
        self._cache[text] = reworded = "".join(pieces) + text[pos:]
        if len(self._cache) > REWORD_CACHE_SIZE:
            self._cache.popitem(last=False)
        return reworded

    def clear_cache(self) -> None:
        """Forget every rewording, so the next `reword` of any text is computed again."""
        self._cache.clear()

    def __call__(self, texts: list[str]) -> list[str]:
        return [self.reword(t) for t in texts]


class InKnownWords:
    """A reranker (`services.reward.RewardModel`, `ClapReranker`) that judges every text in its judge's known
    wording; wrap it in `ByStretch` to judge by stretch as well."""

    def __init__(self, reranker, wording: KnownWording) -> None:
        self.reranker, self.wording = reranker, wording
        self.clap = reranker.clap
        self.onnx_head = getattr(reranker, "onnx_head", None)

    @property
    def backend(self) -> str:
        return f"{self.reranker.backend}+known-words"

    def score_pairs(self, texts: list[str], waveforms: np.ndarray, sample_rate: int) -> np.ndarray:
        return self.reranker.score_pairs(self.wording(list(texts)), waveforms, sample_rate)

    def score(self, prompt: str, waveforms: np.ndarray, sample_rate: int, timeline: list[str] | None = None) -> np.ndarray:
        return self.reranker.score(self.wording.reword(prompt), waveforms, sample_rate)

