"""Procedural event classes of the synthetic sound world.

Every class is a distribution: pitch, length, number of repetitions and timbre are drawn from the
generator passed in, so two draws of the same class differ while staying recognisably that class.
Each synthesiser returns a float32 waveform at 16 kHz whose first and last samples bound the event
(its ground-truth onset and offset once placed in a clip).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from services.audio import SAMPLE_RATE as SR

Rng = np.random.Generator


# ----------------------------------------------------------------------------- building blocks
def _t(n: int) -> np.ndarray:
    return np.arange(n) / SR


def _n(seconds: float) -> int:
    return max(1, int(round(seconds * SR)))


def _tone(freq: np.ndarray | float, n: int, harmonics: list[float] | np.ndarray, rng: Rng) -> np.ndarray:
    """Sum of harmonics of a (possibly time-varying) fundamental with random start phases."""
    f = np.broadcast_to(np.asarray(freq, dtype=np.float64), (n,))
    phase = 2 * np.pi * np.cumsum(f) / SR
    out = np.zeros(n)
    for k, amp in enumerate(harmonics, start=1):
        if amp == 0:
            continue
        alias = f * k < SR / 2 - 200  # drop partials above Nyquist instead of folding them
        out += amp * alias * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    return out


def _band_noise(n: int, lo: float, hi: float, rng: Rng, tilt: float = 0.0) -> np.ndarray:
    """White noise band-passed in the FFT domain; `tilt` is a spectral slope in dB/octave."""
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / SR)
    gain = ((freqs >= lo) & (freqs <= hi)).astype(float)
    if tilt:
        gain *= (np.maximum(freqs, 20) / 1000.0) ** (tilt / 6.02)
    out = np.fft.irfft(spec * gain, n)
    return out / (np.std(out) + 1e-9)


def _decay(n: int, tau: float, attack: float = 0.003) -> np.ndarray:
    t = _t(n)
    env = np.exp(-t / tau)
    a = min(n, _n(attack))
    env[:a] *= np.linspace(0, 1, a)
    return env


def _fade(x: np.ndarray, seconds: float = 0.01) -> np.ndarray:
    k = min(len(x) // 2, _n(seconds))
    if k > 1:
        ramp = np.linspace(0, 1, k)
        x[:k] *= ramp
        x[-k:] *= ramp[::-1]
    return x


def _resonator(n: int, freq: float, tau: float, rng: Rng) -> np.ndarray:
    return np.sin(2 * np.pi * freq * _t(n) + rng.uniform(0, 2 * np.pi)) * _decay(n, tau, attack=0.001)


def _place(parts: list[tuple[int, np.ndarray]]) -> np.ndarray:
    """Sum parts given as (start sample, signal) into one buffer."""
    end = max(s + len(x) for s, x in parts)
    out = np.zeros(end)
    for s, x in parts:
        out[s : s + len(x)] += x
    return out


def _repeat(rng: Rng, count: int, gap: tuple[float, float], make: Callable[[], np.ndarray]) -> np.ndarray:
    parts, pos = [], 0
    for _ in range(count):
        x = make()
        parts.append((pos, x))
        pos += len(x) + _n(rng.uniform(*gap))
    return _place(parts)


def _fit(rng: Rng, lo: float, hi: float, max_s: float) -> float:
    """A duration drawn from [lo, hi] but never above the room the clip leaves (max_s)."""
    hi = max(min(hi, max_s), min(lo, max_s))
    return rng.uniform(min(lo, hi), hi)


# ----------------------------------------------------------------------------- the classes
def dog_bark(rng: Rng, max_s: float) -> np.ndarray:
    f0 = rng.uniform(330, 600)
    formant = rng.uniform(900, 1600)
    n_barks = int(rng.integers(1, 5))

    def bark() -> np.ndarray:
        n = _n(rng.uniform(0.09, 0.18))
        track = f0 * rng.uniform(0.9, 1.1) * np.linspace(1.0, rng.uniform(0.6, 0.8), n)
        harm = [1 / k * np.exp(-(((k * f0) - formant) / 900) ** 2) + 0.15 / k for k in range(1, 12)]
        voiced = _tone(track, n, harm, rng)
        noise = _band_noise(n, 400, 3500, rng) * 0.25
        return (voiced / (np.abs(voiced).max() + 1e-9) + noise) * _decay(n, rng.uniform(0.04, 0.08), 0.008)

    x = _repeat(rng, n_barks, (0.1, 0.3), bark)
    while len(x) > _n(max_s) and n_barks > 1:
        n_barks -= 1
        x = _repeat(rng, n_barks, (0.1, 0.3), bark)
    return x[: _n(max_s)]


def bell(rng: Rng, max_s: float) -> np.ndarray:
    f0 = rng.uniform(320, 900)
    n = _n(_fit(rng, 0.8, 1.8, max_s))
    ratios = np.array([0.5, 1.0, 1.19, 1.5, 2.0, 2.51, 2.66, 3.01, 4.16]) * rng.uniform(0.98, 1.02, 9)
    out = np.zeros(n)
    strikes = 1 if n < _n(1.2) else int(rng.integers(1, 3))
    for s in range(strikes):
        start = int(s * n / strikes)
        m = n - start
        for i, r in enumerate(ratios):
            tau = rng.uniform(0.25, 0.7) / (1 + 0.35 * i)
            out[start:] += rng.uniform(0.3, 1.0) / (1 + 0.2 * i) * _resonator(m, f0 * r, tau, rng)
    return _fade(out, 0.02)


def siren(rng: Rng, max_s: float) -> np.ndarray:
    n = _n(_fit(rng, 1.2, 3.0, max_s))
    lo, hi = rng.uniform(480, 700), rng.uniform(1000, 1500)
    period = rng.uniform(0.6, 1.3)
    lfo = 0.5 - 0.5 * np.cos(2 * np.pi * _t(n) / period + rng.uniform(0, 2 * np.pi))
    harm = [1.0, rng.uniform(0.2, 0.5), rng.uniform(0.05, 0.25)]
    return _fade(_tone(lo + (hi - lo) * lfo, n, harm, rng), 0.05)


def car_horn(rng: Rng, max_s: float) -> np.ndarray:
    f1 = rng.uniform(360, 460)
    ratio = rng.uniform(1.2, 1.3)
    honks = int(rng.integers(1, 3))
    per = min(rng.uniform(0.3, 0.8), max_s / honks - 0.1)

    def honk() -> np.ndarray:
        n = _n(max(0.2, per))
        harm = [1 / k for k in range(1, 14)]
        return _fade(_tone(f1, n, harm, rng) + _tone(f1 * ratio, n, harm, rng), 0.015)

    return _repeat(rng, honks, (0.08, 0.2), honk)[: _n(max_s)]


def bird_chirp(rng: Rng, max_s: float) -> np.ndarray:
    base = rng.uniform(2800, 5000)
    sweep = rng.uniform(-1800, 1800)
    count = int(rng.integers(3, 9))

    def chirp() -> np.ndarray:
        n = _n(rng.uniform(0.04, 0.11))
        track = base * rng.uniform(0.92, 1.08) + sweep * np.linspace(0, 1, n) ** rng.uniform(0.5, 2)
        return _tone(track, n, [1.0, 0.15], rng) * np.hanning(n)

    x = _repeat(rng, count, (0.05, 0.18), chirp)
    return x[: _n(max_s)]


def door_knock(rng: Rng, max_s: float) -> np.ndarray:
    freq = rng.uniform(110, 240)
    count = int(rng.integers(2, 5))

    def knock() -> np.ndarray:
        n = _n(0.09)
        body = _resonator(n, freq * rng.uniform(0.95, 1.05), rng.uniform(0.015, 0.035), rng)
        body += 0.5 * _resonator(n, freq * 2.3, 0.012, rng)
        click = _band_noise(n, 80, 1500, rng) * _decay(n, 0.006, 0.0005) * 0.6
        return body + click

    return _repeat(rng, count, (0.08, 0.22), knock)[: _n(max_s)]


def rain(rng: Rng, max_s: float) -> np.ndarray:
    n = _n(_fit(rng, 1.2, 3.5, max_s))
    bed = _band_noise(n, rng.uniform(900, 1500), 7800, rng, tilt=rng.uniform(-2, 1)) * 0.5
    drops = np.zeros(n)
    for _ in range(int(rng.uniform(20, 60) * n / SR)):
        pos = int(rng.integers(0, n - _n(0.02)))
        m = _n(0.02)
        drops[pos : pos + m] += _resonator(m, rng.uniform(2000, 6000), 0.003, rng) * rng.uniform(0.5, 1.5)
    swell = 1 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.2, 0.8) * _t(n) + rng.uniform(0, 6))
    return _fade((bed + drops) * swell, 0.08)


def engine_idle(rng: Rng, max_s: float) -> np.ndarray:
    n = _n(_fit(rng, 1.2, 3.5, max_s))
    f0 = rng.uniform(28, 50) * (1 + 0.02 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * _t(n)))
    rolloff = rng.uniform(250, 600)
    harm = [np.exp(-(k * 40) / rolloff) * rng.uniform(0.6, 1.0) for k in range(1, 30)]
    body = _tone(f0, n, harm, rng)
    body = body / (np.std(body) + 1e-9) + 0.3 * _band_noise(n, 40, 500, rng)
    am = 1 + 0.25 * np.sin(2 * np.pi * rng.uniform(2, 5) * _t(n))
    return _fade(body * am, 0.1)


def footsteps(rng: Rng, max_s: float) -> np.ndarray:
    count = int(rng.integers(3, 7))
    gap = rng.uniform(0.3, 0.5)
    lo, hi = rng.uniform(150, 300), rng.uniform(1800, 3500)

    def step() -> np.ndarray:
        n = _n(rng.uniform(0.07, 0.1))
        heel = _band_noise(n, lo, hi, rng) * _decay(n, 0.015, 0.002)
        toe = np.zeros(n)
        k = _n(0.035)
        toe[k:] = _band_noise(n - k, lo, hi, rng) * _decay(n - k, 0.012, 0.002) * 0.6
        return heel + toe

    x = _repeat(rng, count, (gap * 0.9, gap * 1.1), step)
    while len(x) > _n(max_s) and count > 2:
        count -= 1
        x = _repeat(rng, count, (gap * 0.9, gap * 1.1), step)
    return x[: _n(max_s)]


def clock_tick(rng: Rng, max_s: float) -> np.ndarray:
    total = _fit(rng, 1.0, 2.5, max_s)
    period = rng.uniform(0.22, 0.4)
    f_tick, f_tock = rng.uniform(2500, 4000), rng.uniform(1800, 2800)
    parts = []
    for i in range(max(2, int(total / period))):
        m = _n(0.012)
        freq = f_tick if i % 2 == 0 else f_tock
        parts.append((_n(i * period), _resonator(m, freq, 0.0025, rng) + 0.3 * _resonator(m, freq * 1.7, 0.0015, rng)))
    return _place(parts)[: _n(max_s)]


def phone_ring(rng: Rng, max_s: float) -> np.ndarray:
    f1 = rng.uniform(850, 1150)
    f2 = f1 * rng.uniform(1.15, 1.3)
    trill = rng.uniform(15, 25)
    rings = int(rng.integers(1, 3))
    per = min(rng.uniform(0.5, 1.0), max_s / rings - 0.25)

    def ring() -> np.ndarray:
        n = _n(max(0.35, per))
        gate = (np.sin(2 * np.pi * trill * _t(n)) > 0).astype(float)
        x = gate * _tone(f1, n, [1, 0.2], rng) + (1 - gate) * _tone(f2, n, [1, 0.2], rng)
        return _fade(x, 0.01)

    return _repeat(rng, rings, (0.2, 0.35), ring)[: _n(max_s)]


def whistle(rng: Rng, max_s: float) -> np.ndarray:
    n = _n(_fit(rng, 0.3, 1.2, max_s))
    f = rng.uniform(1500, 2800) * (1 + rng.uniform(-0.15, 0.25) * np.linspace(0, 1, n))
    f = f * (1 + rng.uniform(0.01, 0.03) * np.sin(2 * np.pi * rng.uniform(4.5, 7) * _t(n)))
    x = _tone(f, n, [1.0, 0.08], rng) + 0.05 * _band_noise(n, 1000, 6000, rng)
    return _fade(x, 0.03)


def thunder(rng: Rng, max_s: float) -> np.ndarray:
    n = _n(_fit(rng, 1.2, 3.0, max_s))
    rumble = _band_noise(n, 20, rng.uniform(180, 320), rng, tilt=-3)
    t = _t(n) / (n / SR)
    env = (t ** rng.uniform(0.2, 0.6)) * np.exp(-t * rng.uniform(2, 4))
    env = env / env.max() * (1 + 0.4 * np.abs(_band_noise(n, 0.5, 6, rng)))
    crack_n = _n(0.15)
    crack = np.zeros(n)
    crack[:crack_n] = _band_noise(crack_n, 100, 3000, rng) * _decay(crack_n, 0.04, 0.002) * rng.uniform(0.3, 0.8)
    return _fade(rumble * env + crack, 0.02)


def cat_meow(rng: Rng, max_s: float) -> np.ndarray:
    n = _n(_fit(rng, 0.4, 1.0, max_s))
    t = np.linspace(0, 1, n)
    f0 = rng.uniform(420, 700) * (1 + rng.uniform(0.2, 0.4) * np.sin(np.pi * t ** rng.uniform(0.7, 1.3)))
    formant = np.linspace(rng.uniform(1800, 2400), rng.uniform(900, 1300), n)
    # time-varying formant: weight each harmonic by its distance to the moving formant
    out = np.zeros(n)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    for k in range(1, 10):
        w = np.exp(-((k * f0 - formant) / 700) ** 2) + 0.2 / k
        out += w * np.sin(k * phase) * (k * f0 < SR / 2 - 200)
    env = np.sin(np.pi * t) ** 0.6
    return out * env


def cow_moo(rng: Rng, max_s: float) -> np.ndarray:
    n = _n(_fit(rng, 0.8, 1.8, max_s))
    t = np.linspace(0, 1, n)
    f0 = rng.uniform(95, 160) * (1 + 0.15 * np.sin(np.pi * t) - 0.1 * t)
    f1, f2 = rng.uniform(250, 400), rng.uniform(600, 900)
    harm = [np.exp(-((k * 125 - f1) / 180) ** 2) + 0.6 * np.exp(-((k * 125 - f2) / 250) ** 2) + 0.05 for k in range(1, 25)]
    env = np.minimum(1, 6 * t) * np.minimum(1, 4 * (1 - t))
    return _tone(f0, n, harm, rng) * env


def guitar(rng: Rng, max_s: float) -> np.ndarray:
    scale = [110.0, 123.5, 146.8, 164.8, 196.0, 220.0, 246.9, 293.7, 329.6, 392.0]
    count = int(rng.integers(1, 5))
    gap = rng.uniform(0.18, 0.35)
    note_len = rng.uniform(0.5, 0.9)
    parts = []
    for i in range(count):
        f = scale[int(rng.integers(0, len(scale)))]
        period = int(round(SR / f))
        m = _n(note_len)
        # Karplus-Strong: a noise burst circulating in a damped delay line
        buf = rng.uniform(-1, 1, period)
        out = np.empty(m)
        damp = rng.uniform(0.994, 0.998)
        for j in range(0, m, period):
            k = min(period, m - j)
            out[j : j + k] = buf[:k]
            buf = damp * 0.5 * (buf + np.roll(buf, -1))
        parts.append((_n(i * gap), _fade(out, 0.005)))
    x = _place(parts)
    return x[: _n(max_s)]


@dataclass(frozen=True)
class EventClass:
    id: str
    label: str  # AudioSet-style display name
    synth: Callable[[Rng, float], np.ndarray]
    min_s: float  # shortest duration the synthesiser produces
    background: bool  # continuous sounds that can sit "in the background" of another event


EVENT_CLASSES: tuple[EventClass, ...] = (
    EventClass("dog_bark", "Dog bark", dog_bark, 0.1, False),
    EventClass("bell", "Church bell", bell, 0.8, False),
    EventClass("siren", "Siren", siren, 1.2, True),
    EventClass("car_horn", "Car horn", car_horn, 0.2, False),
    EventClass("bird_chirp", "Bird chirp", bird_chirp, 0.3, False),
    EventClass("door_knock", "Knock", door_knock, 0.25, False),
    EventClass("rain", "Rain", rain, 1.2, True),
    EventClass("engine_idle", "Idling engine", engine_idle, 1.2, True),
    EventClass("footsteps", "Footsteps", footsteps, 0.8, False),
    EventClass("clock_tick", "Clock tick", clock_tick, 1.0, True),
    EventClass("phone_ring", "Telephone ring", phone_ring, 0.35, False),
    EventClass("whistle", "Whistle", whistle, 0.3, False),
    EventClass("thunder", "Thunder", thunder, 1.2, True),
    EventClass("cat_meow", "Cat meow", cat_meow, 0.4, False),
    EventClass("cow_moo", "Cow moo", cow_moo, 0.8, False),
    EventClass("guitar", "Acoustic guitar", guitar, 0.5, False),
)
EVENT_IDS: tuple[str, ...] = tuple(c.id for c in EVENT_CLASSES)
EVENTS: dict[str, EventClass] = {c.id: c for c in EVENT_CLASSES}


def synthesize_event(event_id: str, rng: Rng, max_s: float) -> np.ndarray:
    """One draw of an event class, RMS-normalised over its active part, trimmed to its extent."""
    if event_id not in EVENTS:
        raise KeyError(f"unknown event id {event_id!r}; known: {', '.join(EVENT_IDS)}")
    x = np.asarray(EVENTS[event_id].synth(rng, max_s), dtype=np.float64)
    x = x[: _n(max_s)]
    # trim leading/trailing near-silence so onset/offset mark where the event is audible
    frame = _n(0.005)
    energy = np.sqrt(np.convolve(x**2, np.ones(frame) / frame, mode="same"))
    active = np.flatnonzero(energy > energy.max() * 10 ** (-40 / 20))
    x = x[active[0] : active[-1] + 1]
    loud = energy[active[0] : active[-1] + 1] > energy.max() * 10 ** (-20 / 20)
    rms = np.sqrt(np.mean(x[loud] ** 2)) if loud.any() else np.sqrt(np.mean(x**2))
    return (x / (rms + 1e-9) * 0.1).astype(np.float32)
