"""Clause channels: what each token's clause means as a whole, appended to the generator's text states.

The UNet reads MiniLM's token states, and an event named by words training never used ("a hound yaps")
gives token states it never learned to read: the mini generator gets 51% of such integrity prompts right,
against 89% with training words. Mean-pooled, the same encoder's states place paraphrases together (it is
trained for that): "a hound yaps" is nearest to the dog's training phrasings, and so are 26 more of the 32
held-out phrasings. So each clause of a prompt is also encoded on its own and mean-pooled, and every token
of the clause carries that vector in extra channels (zeros for tokens outside every clause: [CLS], [SEP],
connectives, padding). A UNet widened for them starts with zero weights on them
(`training.train_generator.widen_unet`), so it computes what it did until training teaches it to read them.
"""

from __future__ import annotations

import re

import torch

from services.timeline import Segment, clause_segment, parse_timeline

# words that join two sounds heard together; longest first, so "and at the same time" is one marker
OVERLAP_MARKERS: tuple[str, ...] = ("and at the same time", "at the same time", "in the background", "meanwhile", "while", "with", "and", "as")
_OVERLAP_RE = re.compile(r"\b(" + "|".join(re.escape(m) for m in OVERLAP_MARKERS) + r")\b")


def split_clauses(prompt: str) -> list[Segment]:
    """The clauses of a prompt, one per sound: the timeline's for a prompt that states a sequence, else the
    pieces between overlap markers and punctuation ("a dog barks while rain falls"); a prompt without
    either is one clause. Empty for a prompt without words (the unconditional branch's "")."""
    timeline = parse_timeline(prompt)
    if timeline:
        return timeline
    low = prompt.lower()
    cuts = sorted([(m.start(), m.end()) for m in _OVERLAP_RE.finditer(low)] + [(p.start(), p.end()) for p in re.finditer(r"[;,.:]", low)])
    clauses, pos = [], 0
    for a, b in cuts:
        if a < pos:
            continue
        seg = clause_segment(prompt, pos, a)
        if seg is not None:
            clauses.append(seg)
        pos = b
    seg = clause_segment(prompt, pos, len(prompt))
    if seg is not None:
        clauses.append(seg)
    return clauses


def mean_pooled(encoder, texts: list[str], batch: int = 256) -> torch.Tensor:
    """[len(texts), D]: each text's encoder states averaged over its tokens (as sentence-transformers pools
    MiniLM), not normalised, so the channels keep the token states' scale."""
    out = []
    for i in range(0, len(texts), batch):
        hidden, mask = encoder(texts[i : i + batch])
        m = mask.unsqueeze(-1).to(hidden.dtype)
        out.append((hidden * m).sum(1) / m.sum(1))
    return torch.cat(out) if out else torch.zeros(0, encoder.hidden_size)


def sentence_embeddings(encoder, texts: list[str]) -> torch.Tensor:
    """MiniLM sentence embeddings (mean-pooled, L2-normalised, as all-MiniLM-L6-v2 is trained), [len(texts), D]."""
    return torch.nn.functional.normalize(mean_pooled(encoder, texts, batch=512), dim=-1)


def clause_states(encoder, texts: list[str]) -> torch.Tensor:
    """[B, L, D]: for every token of encoder(texts)'s states, the mean-pooled state of its clause encoded alone
    (`split_clauses`), zeros for tokens in no clause. `encoder` is a `services.text_encoder.TextEncoder`."""
    spans = encoder.token_spans(texts)  # [B, L, 2], the same tokenisation as encoder(texts)
    clauses = [split_clauses(t) for t in texts]
    vectors = mean_pooled(encoder, [c.text for cs in clauses for c in cs])
    out = torch.zeros(len(texts), spans.shape[1], encoder.hidden_size, dtype=vectors.dtype, device=vectors.device)
    k = 0
    for i, cs in enumerate(clauses):
        start, end = spans[i, :, 0], spans[i, :, 1]
        for c in cs:
            inside = (end > start) & (start >= c.start) & (end <= c.end)
            out[i, inside.to(out.device)] = vectors[k]
            k += 1
    return out


def text_states(encoder, texts: list[str], clause_channels: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen text states a UNet reads, [B, L, D] or with clause channels [B, L, 2D] (token states, then
    `clause_states`), and the mask [B, L]. Generation and training (from scratch or BATON) all encode here."""
    hidden, mask = encoder(texts)
    if clause_channels:
        hidden = torch.cat([hidden, clause_states(encoder, texts).to(hidden)], dim=-1)
    return hidden, mask
