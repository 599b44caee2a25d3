"""CLAP: the laion-clap -> transformers key mapping (against the real key names and shapes), HF-format
and mini CLAP loading from a directory, the embedder interface (normalised, resampled, cosine)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from services.clap import (
    HF_CONSTANT_BUFFERS,
    ConversionError,
    HFClap,
    MiniClap,
    MiniClapConfig,
    MiniClapModel,
    check_converted,
    convert_laion_clap_state_dict,
    laion_clap_config,
    load_clap,
    load_laion_clap_checkpoint,
    projected,
)
from services.text_encoder import MINILM, TextEncoder

FIXTURE = Path(__file__).parent / "fixtures" / "clap" / "laion_clap_keys.json"


def laion_state(name: str) -> dict[str, torch.Tensor]:
    """A released checkpoint's state dict as saved (DDP `module.` prefix, transformers-4 position_ids), on meta tensors."""
    keys = json.loads(FIXTURE.read_text())["checkpoints"][name]["keys"]
    state = {f"module.{k}": torch.empty(shape, device="meta") for k, shape in keys.items()}
    state["module.text_branch.embeddings.position_ids"] = torch.empty(1, 514, device="meta")
    return state


@pytest.mark.parametrize("name", ["630k-audioset-best.pt", "630k-audioset-fusion-best.pt"])
def test_every_laion_key_is_mapped_or_dropped_for_a_reason_and_shapes_match(name):
    from transformers import ClapModel

    state = laion_state(name)
    converted, dropped = convert_laion_clap_state_dict(state)
    fusion = json.loads(FIXTURE.read_text())["checkpoints"][name]["enable_fusion"]
    with torch.device("meta"):
        expected = ClapModel(laion_clap_config(fusion)).state_dict()
    check_converted(converted, expected)  # no missing, no extra, equal shapes
    # nothing silently lost: every original value lands in the model or is dropped with a reason
    n_qkv = sum(k.endswith(("attn.qkv.weight", "attn.qkv.bias")) for k in state)
    assert len(converted) + len(dropped) == len(state) + 2 * n_qkv
    assert set(expected) - set(converted) <= set(HF_CONSTANT_BUFFERS)
    assert "text_model.embeddings.position_ids" in converted  # the known extra key maps onto the buffer
    assert all(reason for reason in dropped.values())
    assert {k.split(".")[0] for k in dropped} <= {"audio_branch", "text_transform", "audio_transform"}


def test_unknown_keys_are_an_error_not_a_leftover():
    state = {"text_branch.embeddings.word_embeddings.weight": torch.zeros(3, 2), "mystery.weight": torch.zeros(1)}
    with pytest.raises(ConversionError, match="mystery.weight"):
        convert_laion_clap_state_dict(state)


def test_fused_qkv_splits_into_query_key_value_in_that_order():
    w = torch.arange(6 * 2, dtype=torch.float32).reshape(6, 2)
    b = torch.arange(6, dtype=torch.float32)
    out, _ = convert_laion_clap_state_dict({"audio_branch.layers.0.blocks.1.attn.qkv.weight": w, "audio_branch.layers.0.blocks.1.attn.qkv.bias": b})
    prefix = "audio_model.audio_encoder.layers.0.blocks.1.attention.self"
    assert torch.equal(out[f"{prefix}.query.weight"], w[:2]) and torch.equal(out[f"{prefix}.key.weight"], w[2:4]) and torch.equal(out[f"{prefix}.value.weight"], w[4:])
    assert torch.equal(out[f"{prefix}.value.bias"], b[4:])


def tiny_clap_config():
    from transformers import ClapAudioConfig, ClapConfig, ClapTextConfig

    text = ClapTextConfig(vocab_size=300, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, max_position_embeddings=66, type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2, projection_dim=16)
    audio = ClapAudioConfig(spec_size=128, patch_embeds_hidden_size=8, depths=[1, 1], num_attention_heads=[2, 2], window_size=4, hidden_size=16, projection_dim=16, num_mel_bins=64)
    return ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=16)


def to_laion_layout(hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What a laion-clap checkpoint of this model would hold: the inverse renames, fused qkv, DDP prefix."""
    out = {}
    for key, value in hf_state.items():
        if key.endswith("token_type_ids"):
            continue
        if key.startswith("audio_model."):  # the Swin blocks: renamed sub-modules, fused qkv
            if ".attention.self.key." in key or ".attention.self.value." in key:
                continue
            if ".attention.self.query." in key:
                base, kind = key.split(".attention.self.query.")
                value = torch.cat([hf_state[f"{base}.attention.self.{n}.{kind}"] for n in ("query", "key", "value")])
                key = f"{base}.attn.qkv.{kind}"
            for new, old in (
                ("audio_model.audio_encoder.batch_norm.", "audio_branch.bn0."),
                ("audio_model.audio_encoder.", "audio_branch."),
                (".layernorm_before.", ".norm1."),
                (".layernorm_after.", ".norm2."),
                (".attention.output.dense.", ".attn.proj."),
                (".attention.self.relative_position_", ".attn.relative_position_"),
                (".intermediate.dense.", ".mlp.fc1."),
                (".output.dense.", ".mlp.fc2."),
            ):
                key = key.replace(new, old)
        for new, old in (("text_model.", "text_branch."), ("_projection.linear1.", "_projection.0."), ("_projection.linear2.", "_projection.2.")):
            key = key.replace(new, old)
        out[f"module.{key}"] = value
    out["module.text_transform.sequential.0.weight"] = torch.zeros(16, 16)  # dropped: training-only MLP
    return out


def test_a_laion_checkpoint_file_loads_into_the_same_model(tmp_path):
    from transformers import ClapModel

    torch.manual_seed(0)
    original = ClapModel(tiny_clap_config()).eval()
    path = tmp_path / "tiny-laion.pt"
    torch.save({"epoch": 3, "state_dict": to_laion_layout(original.state_dict())}, path)
    loaded = load_laion_clap_checkpoint(path, config=tiny_clap_config())
    ids = torch.tensor([[0, 5, 9, 2]])
    feats = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(projected(original.get_text_features(input_ids=ids)), projected(loaded.get_text_features(input_ids=ids)), atol=1e-6)
        assert torch.allclose(projected(original.get_audio_features(input_features=feats)), projected(loaded.get_audio_features(input_features=feats)), atol=1e-6)


def tiny_hf_clap_dir(directory: Path) -> Path:
    """A random tiny ClapModel + ClapProcessor (byte-level BPE tokenizer trained here) saved with save_pretrained."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import ClapFeatureExtractor, ClapModel, ClapProcessor, RobertaTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["a dog barks then a bell rings", "rain falls while a car horn honks"] * 10, vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tok_dir = directory / "tok"
    tok_dir.mkdir(parents=True)
    bpe.save_model(str(tok_dir))
    tokenizer = RobertaTokenizerFast.from_pretrained(tok_dir, model_max_length=64)  # (transformers 5 ignores vocab_file= in the constructor)
    assert len(tokenizer) == 300
    extractor = ClapFeatureExtractor(feature_size=64, sampling_rate=48000, max_length_s=1)
    ClapProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(directory / "clap")
    torch.manual_seed(0)
    ClapModel(tiny_clap_config()).save_pretrained(directory / "clap")
    return directory / "clap"


def test_hf_clap_directory_loads_and_embeds(tmp_path):
    clap = load_clap(tiny_hf_clap_dir(tmp_path))
    assert isinstance(clap, HFClap) and clap.sample_rate == 48000 and clap.embed_dim == 16
    text = clap.embed_text(["a dog barks", "rain falls"])
    rng = np.random.default_rng(0)
    audio = clap.embed_audio(rng.standard_normal((3, 8000)).astype(np.float32) * 0.1, 16000)  # resampled to 48 kHz inside
    assert text.shape == (2, 16) and audio.shape == (3, 16)
    assert np.allclose(np.linalg.norm(text, axis=1), 1, atol=1e-5) and np.allclose(np.linalg.norm(audio, axis=1), 1, atol=1e-5)


@pytest.fixture(scope="module")
def mini_clap() -> MiniClap:
    torch.manual_seed(0)
    config = MiniClapConfig(channels=[4, 8, 8, 16], audio_layers=1, embed_dim=32)
    return MiniClap(MiniClapModel(config), TextEncoder.from_pretrained(MINILM, 32))


def test_mini_clap_embeds_normalised_vectors_and_scores_by_cosine(mini_clap):
    rng = np.random.default_rng(0)
    wav = rng.standard_normal((3, 16000)).astype(np.float32) * 0.1
    texts = ["a dog barks", "a bell rings", "first rain, then thunder"]
    a, t = mini_clap.embed_audio(wav, 16000), mini_clap.embed_text(texts)
    assert a.shape == (3, 32) and t.shape == (3, 32)
    assert np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    assert np.allclose(mini_clap.score(texts, wav, 16000), np.sum(a * t, axis=1), atol=1e-5)
    # other sample rates are resampled to the model's 16 kHz: the same sound at 32 kHz embeds alike
    from scipy.signal import resample_poly

    assert np.allclose(mini_clap.embed_audio(resample_poly(wav, 2, 1, axis=-1), 32000), a, atol=2e-2)
    with pytest.raises(ValueError, match="2 texts for 3 clips"):
        mini_clap.score(texts[:2], wav, 16000)


def test_mini_clap_directory_round_trip(mini_clap, tmp_path):
    mini_clap.model.save_pretrained(tmp_path / "clap")
    loaded = load_clap(tmp_path / "clap")
    assert isinstance(loaded, MiniClap)
    wav = np.random.default_rng(1).standard_normal((2, 16000)).astype(np.float32) * 0.1
    assert np.allclose(loaded.embed_audio(wav, 16000), mini_clap.embed_audio(wav, 16000), atol=1e-6)
    (tmp_path / "clap" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not JSON"):
        load_clap(tmp_path / "clap")


def test_shipped_mini_clap_loads_from_package_data():
    from services.checkpoints import shipped

    clap = load_clap(shipped("clap"))
    assert isinstance(clap, MiniClap) and clap.embed_dim == 512
    manifest = json.loads((shipped("clap") / "MANIFEST.json").read_text())
    assert manifest["metrics"]["text_to_audio.r10"] > 0


def test_mini_clap_embeds_clips_shorter_than_its_receptive_field():
    from services.checkpoints import shipped
    from services.clap import load_clap

    clap = load_clap(shipped("clap"))
    short = np.random.default_rng(0).standard_normal((2, 4096)).astype(np.float32) * 0.1  # 0.256 s
    emb = clap.embed_audio(short, 16000)
    assert emb.shape == (2, clap.embed_dim) and np.isfinite(emb).all()
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, rtol=1e-5)


def test_eval_clap_prints_retrieval_for_each_checkpoint(tmp_path):
    """`tta eval clap` on a few held-out clips: a row per CLAP, JSON keys per checkpoint version, and the
    shipped CLAP finds captions well above chance even on 24 clips."""
    from click.testing import CliRunner

    from services.checkpoints import shipped
    from services.manifest import checkpoint_version
    from tta.cli import main

    res = CliRunner().invoke(main, ["eval", "clap", "--n", "24", "--no-codec", "--work-dir", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    table = json.loads(res.output.strip().splitlines()[-1])
    name = checkpoint_version(shipped("clap"))
    assert f"| {name} |" in res.output and table[f"{name}.heldout.clips"] == 24
    assert table[f"{name}.text_to_audio.r10"] > 10 / 24 + 0.2 and f"{name}.codec_heldout.text_to_audio.r1" not in table
    bad = CliRunner().invoke(main, ["eval", "clap", "--clap", str(tmp_path / "missing")])
    assert bad.exit_code != 0 and "does not exist" in bad.output


def test_teacher_worded_clap_clips_keep_their_sounds_and_negatives():
    """`tta train clap --teacher-share`: the same rendered clips, a share of the captioned ones named by their
    teacher words only, and their order-swapped negatives worded the same way."""
    import re

    from tests.test_teacher_words import TEACHER
    from training.train_clap import _render_chunk
    from training.world.captions import mentioned_events

    plain_mel, plain, plain_swapped, _ = _render_chunk((0, 0, 40, "train", 0.0, None))
    mel, captions, swapped, open_prompts = _render_chunk((0, 0, 40, "train", 0.5, TEACHER))
    assert np.array_equal(mel, plain_mel)
    worded = [i for i, (c, p) in enumerate(zip(captions, plain)) if c != p]
    assert 8 <= len(worded) <= 24, len(worded)
    assert all(open_prompts[i] is None for i in worded), "scene clips keep their texts"
    for i in worded:
        assert mentioned_events(captions[i]) == [], f"a training phrasing left in {captions[i]!r}"
        assert set(re.findall(r"[a-z]+oid", captions[i])) == {TEACHER[e][0] for e in mentioned_events(plain[i])}
        if swapped[i]:
            assert sorted(re.findall(r"[a-z]+oid", swapped[i])) == sorted(re.findall(r"[a-z]+oid", captions[i])) and swapped[i] != captions[i]
    with pytest.raises(ValueError, match="teacher_share"):
        from training.train_clap import train_clap

        train_clap(Path("unused"), teacher_share=1.5)
