import numpy as np
import pytest
import torch

from services.audio import GriffinLimVocoder, MelConfig, MelSpectrogram, encode_audio, mel_filterbank, read_audio, write_wav


def test_mel_filterbank_matches_tango_shape_and_covers_band():
    cfg = MelConfig()
    fb = mel_filterbank(cfg)
    assert fb.shape == (64, 513)
    assert (fb >= 0).all()
    # every filter has support and the filter centres rise monotonically
    centres = (fb * np.arange(513)).sum(1) / fb.sum(1)
    assert (fb.sum(1) > 0).all() and np.all(np.diff(centres) > 0)


def test_log_mel_puts_a_tone_in_the_right_band():
    cfg = MelConfig(hop_length=256)
    t = np.arange(16000) / 16000
    low = torch.from_numpy(np.sin(2 * np.pi * 300 * t).astype(np.float32))
    high = torch.from_numpy(np.sin(2 * np.pi * 4000 * t).astype(np.float32))
    mel = MelSpectrogram(cfg)
    assert mel(low)[0].mean(1).argmax() < mel(high)[0].mean(1).argmax()
    assert mel(low).shape[-1] == cfg.num_frames(16000)


def test_wav_flac_round_trip(tmp_path):
    x = (0.5 * np.sin(np.linspace(0, 300, 16000))).astype(np.float32)
    write_wav(tmp_path / "a.wav", x)
    y = read_audio(tmp_path / "a.wav")
    assert np.abs(x - y).max() < 1e-3
    assert encode_audio(x, "flac")[:4] == b"fLaC"
    assert encode_audio(x, "wav")[:4] == b"RIFF"


def test_read_audio_resamples(tmp_path):
    import soundfile as sf

    sf.write(tmp_path / "b.wav", np.zeros(44100, dtype=np.float32), 44100)
    assert len(read_audio(tmp_path / "b.wav")) == 16000


def _tone_with_vibrato(seconds: float = 1.0, hz: float = 2300.0) -> torch.Tensor:
    """A whistle-like steady tone: the kind of sound a small HiFi-GAN drops."""
    t = np.arange(int(16000 * seconds)) / 16000
    phase = 2 * np.pi * hz * t + 3 * np.sin(2 * np.pi * 5 * t)
    return torch.from_numpy((0.3 * np.sin(phase)).astype(np.float32))


def test_griffin_lim_rebuilds_the_mel_it_is_given():
    cfg = MelConfig(hop_length=512)
    mel = MelSpectrogram(cfg)
    wav = _tone_with_vibrato()
    frames = len(wav) // cfg.hop_length
    log_mel = mel.log_magnitude(wav[None]).transpose(1, 2)[:, :frames]  # [1, frames, mels], the vocoder's input
    vocoder = GriffinLimVocoder(cfg)
    out = vocoder(log_mel)
    assert out.shape == (1, frames * cfg.hop_length), "HiFi-GAN's contract: frames * hop samples"
    rebuilt = mel.log_magnitude(out).transpose(1, 2)[:, :frames]
    loud = log_mel > log_mel.max() - 4  # the tone's bins, not the floor
    assert (rebuilt - log_mel)[loud].abs().mean() < 0.3
    assert 0.7 < out.pow(2).mean().sqrt() / wav[: out.shape[1]].pow(2).mean().sqrt() < 1.3, "the tone keeps its level"
    np.testing.assert_array_equal(out.numpy(), vocoder(log_mel).numpy()), "the same mel gives the same audio"
    other = mel.log_magnitude(_tone_with_vibrato(hz=900.0)[None]).transpose(1, 2)[:, :frames]
    batched = vocoder(torch.cat([other, log_mel]))
    assert (batched[1] - out[0]).abs().max() < 1e-4, "a clip's audio does not depend on its place in the batch"
    lower = mel.log_magnitude(_tone_with_vibrato(hz=1700.0)[None]).transpose(1, 2)[:, :frames]
    assert (rebuilt - lower)[loud].abs().mean() > 1.0, "a tone elsewhere is far: the check can tell"


def test_griffin_lim_refuses_bad_settings_and_shapes():
    with pytest.raises(ValueError, match="iterations >= 1"):
        GriffinLimVocoder(MelConfig(), iterations=0)
    with pytest.raises(ValueError, match="momentum"):
        GriffinLimVocoder(MelConfig(), momentum=1.0)
    with pytest.raises(ValueError, match=r"\[batch, frames, 64\]"):
        GriffinLimVocoder(MelConfig())(torch.zeros(1, 10, 80))


def test_limit_peaks_scales_only_clips_over_the_peak():
    import numpy as np

    from services.audio import limit_peaks

    loud, quiet = np.sin(np.linspace(0, 60, 1000)).astype(np.float32) * 3.6, np.linspace(-0.5, 0.5, 1000).astype(np.float32)
    out = limit_peaks(np.stack([loud, quiet]))
    assert np.abs(out[0]).max() == np.float32(0.99) and np.allclose(out[0], loud * 0.99 / np.abs(loud).max())
    assert np.array_equal(out[1], quiet) and out.dtype == np.float32
    assert limit_peaks(np.zeros((2, 3, 0))).shape == (2, 3, 0)
