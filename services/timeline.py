"""Timelines: which part of a prompt each stretch of the clip should sound like.

The mini generator hears every event a prompt names but not their order: its frozen MiniLM text
states barely say where a word stands (docs/results/generator/order). A prompt that states a
sequence ("a dog barks, then a bell rings") is therefore split into its clauses, in the order they
are to be heard, and the clip's time axis into as many equal stretches; the UNet's cross-attention
then lets each stretch of latent frames see only its own clause's tokens (plus the tokens that
belong to no clause: [CLS], connectives, punctuation). Prompts that state no sequence get no
timeline and are generated exactly as before.

The split is plain English: sequence markers ("then", "followed by", "after that", "afterwards",
"next", "later", "finally", "before", "after") and the punctuation between clauses. "B after A" is
the one marker that names the later sound first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

# sequence markers, longest first so "and then" is one marker and not "and" + "then"
SEQUENCE_MARKERS: tuple[str, ...] = (
    "and after that",
    "after that",
    "and afterwards",
    "afterwards",
    "afterward",
    "and then",
    "followed by",
    "subsequently",
    "and finally",
    "finally",
    "then",
    "next",
    "later",
    "before",
    "after",
)
# words that open a clause without being part of what it sounds like
LEADING_FILLERS = ("first", "at first", "and", "first of all")
MAX_SEGMENTS = 6
_MARKER_RE = re.compile(r"\b(" + "|".join(re.escape(m) for m in SEQUENCE_MARKERS) + r")\b")
_FILLER_RE = re.compile(r"^(?:" + "|".join(re.escape(f) for f in sorted(LEADING_FILLERS, key=len, reverse=True)) + r")\b\s*")


@dataclass(frozen=True)
class Segment:
    """One clause of a prompt: its character span [start, end) in the prompt and its text."""

    start: int
    end: int
    text: str


def clause_segment(prompt: str, start: int, end: int) -> Segment | None:
    """The clause in prompt[start:end] without surrounding punctuation, spaces and leading fillers."""
    piece = prompt[start:end]
    lead = len(piece) - len(piece.lstrip(" ,;.:"))
    piece = piece.strip(" ,;.:")
    while m := _FILLER_RE.match(piece.lower()):
        lead += m.end()
        piece = piece[m.end() :]
    piece = piece.rstrip(" ,;.:")
    if not any(c.isalnum() for c in piece):
        return None
    return Segment(start + lead, start + lead + len(piece), piece)


def parse_timeline(prompt: str) -> list[Segment] | None:
    """The prompt's clauses in the order they should be heard, or None when it states no sequence
    (no marker, fewer than two clauses, or more than MAX_SEGMENTS)."""
    low = prompt.lower()
    markers = list(_MARKER_RE.finditer(low))
    if not markers:
        return None
    # cut at every marker and at clause punctuation; remember which cuts were "after" (reversing)
    cuts: list[tuple[int, int, bool]] = [(m.start(), m.end(), m.group(1) == "after") for m in markers]
    cuts += [(p.start(), p.end(), False) for p in re.finditer(r"[;,.:]", low) if not any(a <= p.start() < b for a, b, _ in cuts)]
    cuts.sort()
    pieces: list[tuple[Segment, bool]] = []  # (clause, the cut before it was "after")
    pos, reverse_next = 0, False
    for a, b, is_after in cuts:
        seg = clause_segment(prompt, pos, a)
        if seg is not None:
            pieces.append((seg, reverse_next))
        # an "after" stays with the next clause that has words
        pos, reverse_next = b, is_after or (reverse_next and seg is None)
    seg = clause_segment(prompt, pos, len(prompt))
    if seg is not None:
        pieces.append((seg, reverse_next))
    if len(pieces) < 2:
        return None
    ordered: list[Segment] = []
    for seg, after in pieces:
        # "B after A": A plays first, so it goes before the clause that preceded the marker
        if after and ordered:
            ordered.insert(len(ordered) - 1, seg)
        else:
            ordered.append(seg)
    return ordered if len(ordered) <= MAX_SEGMENTS else None


def token_time_mask(offsets: torch.Tensor, segments: list[Segment] | None, frames: int) -> torch.Tensor:
    """[tokens, frames] bool: may latent frame f attend to token k? Tokens inside segment i are
    visible in the i-th of len(segments) equal stretches of the clip only; all other tokens (special
    tokens, markers, punctuation) everywhere. `offsets` [tokens, 2] are the tokenizer's character
    spans ((0, 0) for special and padding tokens; padding stays hidden by the key mask as before)."""
    n_tokens = offsets.shape[0]
    mask = torch.ones(n_tokens, frames, dtype=torch.bool)
    if not segments:
        return mask
    k = len(segments)
    stretch = torch.div(torch.arange(frames) * k, frames, rounding_mode="floor")  # which segment each frame plays
    for t in range(n_tokens):
        a, b = int(offsets[t, 0]), int(offsets[t, 1])
        if b <= a:
            continue
        for i, seg in enumerate(segments):
            if seg.start <= a and b <= seg.end:
                mask[t] = stretch == i
                break
    return mask


class TimelineMask:
    """Per-row token visibility over latent time, for every resolution of the UNet.

    `visible` [B, tokens, frames] is at the latent's time resolution; the latent is [B, C, frames,
    bins] and the UNet's attention sees it flattened time-major, halved in both axes per level."""

    def __init__(self, visible: torch.Tensor, bins: int) -> None:
        self.visible, self.bins = visible, bins
        self._bias: dict[tuple[int, torch.dtype, torch.device], torch.Tensor] = {}

    def bias(self, queries: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """Additive attention bias [B, queries, tokens]: 0 where visible, -10000 (diffusers' masked value) elsewhere."""
        key = (queries, dtype, device)
        if key not in self._bias:
            frames = self.visible.shape[-1]
            scale = round((frames * self.bins / queries) ** 0.5)  # the level's downsampling factor
            level_frames, level_bins = -(-frames // scale), -(-self.bins // scale)
            if level_frames * level_bins != queries:
                raise ValueError(f"cannot place {queries} attention queries on a {frames}x{self.bins} latent")
            centres = torch.clamp(torch.arange(level_frames) * scale + scale // 2, max=frames - 1)
            vis = self.visible[:, :, centres].repeat_interleave(level_bins, dim=2).transpose(1, 2)  # [B, queries, tokens]
            self._bias[key] = torch.where(vis, 0.0, -10000.0).to(device=device, dtype=dtype)
        return self._bias[key]


class TimelineAttnProcessor:
    """diffusers' scaled-dot-product attention, with a TimelineMask added to cross-attention.

    Without `timeline` (or in self-attention) it computes exactly what AttnProcessor2_0 does."""

    def __init__(self) -> None:
        from diffusers.models.attention_processor import AttnProcessor2_0

        self.inner = AttnProcessor2_0()

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, timeline: TimelineMask | None = None) -> torch.Tensor:
        if timeline is not None and encoder_hidden_states is not None:
            bias = timeline.bias(hidden_states.shape[1], hidden_states.dtype, hidden_states.device)
            attention_mask = bias if attention_mask is None else attention_mask + bias
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
