import numpy as np
import torch

from services.audio import MelConfig, MelSpectrogram, encode_audio, mel_filterbank, read_audio, write_wav


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
