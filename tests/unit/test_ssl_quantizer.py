"""BEST-RQ random-projection quantizer against a plain per-frame reference and on speech-like fbank."""

import math

import pytest
import torch
from ssl_fixtures import speechlike_fbank, tiny_conformer

from seed_asr.losses.cross_entropy import IGNORE_INDEX
from seed_asr.models.encoder import ConformerEncoder
from seed_asr.models.ssl_targets import RandomProjectionQuantizer
from seed_asr.testing.threads import torch_threads


def reference_labels(q: RandomProjectionQuantizer, feats: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Frame by frame: concatenate 4 frames (zeros past the end), project, pick the max-cosine code."""
    b, t, f = feats.shape
    out = torch.empty(b, num_frames, q.num_codebooks, dtype=torch.long)
    for i in range(b):
        for j in range(num_frames):
            rows = [feats[i, k] if k < t else torch.zeros(f) for k in range(4 * j, 4 * j + 4)]
            v = torch.cat(rows)
            for n in range(q.num_codebooks):
                z = v @ q.projection[n]
                cos = (q.codebooks[n] @ z) / (q.codebooks[n].norm(dim=1) * z.norm())
                out[i, j, n] = cos.argmax()
    return out


@pytest.mark.parametrize("output_lengths", [None, ConformerEncoder.output_lengths])
@pytest.mark.parametrize("num_codebooks", [1, 3])
def test_labels_match_reference(output_lengths, num_codebooks):
    torch.manual_seed(0)
    q = RandomProjectionQuantizer(
        codebook_size=64, num_codebooks=num_codebooks, output_lengths=output_lengths
    )
    feats, lens = torch.randn(2, 41, 80), torch.tensor([37, 20])  # T = 41 > max length: extra padding
    labels = q(feats, lens)
    out_lens = q.output_lengths(lens)
    ref = reference_labels(q, feats, int(out_lens.max()))
    if num_codebooks == 1:
        ref = ref.squeeze(-1)
    assert labels.shape == ref.shape and labels.dtype == torch.int64
    for i in range(2):
        assert torch.equal(labels[i, : out_lens[i]], ref[i, : out_lens[i]])
        assert (labels[i, out_lens[i] :] == IGNORE_INDEX).all()


def test_frozen_seeded_and_saved_in_state_dict():
    q = RandomProjectionQuantizer(codebook_size=256, num_codebooks=2, seed=3)
    assert list(q.parameters()) == []
    assert set(q.state_dict()) == {"projection", "codebooks"}
    fan_in, fan_out = 320, 16
    assert q.projection.abs().max() <= math.sqrt(6 / (fan_in + fan_out))
    assert torch.allclose(q.codebooks.norm(dim=-1), torch.ones(2, 256))
    same = RandomProjectionQuantizer(codebook_size=256, num_codebooks=2, seed=3)
    other = RandomProjectionQuantizer(codebook_size=256, num_codebooks=2, seed=4)
    assert torch.equal(q.projection, same.projection) and torch.equal(q.codebooks, same.codebooks)
    feats, lens = torch.randn(3, 64, 80), torch.tensor([64, 50, 9])
    assert not torch.equal(q(feats, lens), other(feats, lens))
    other.load_state_dict(q.state_dict())  # a resumed run gets the saved tokenizer, not a new draw
    assert torch.equal(q(feats, lens), other(feats, lens))


def test_label_frames_equal_encoder_frames_for_many_lengths():
    encoder = tiny_conformer(d_model=8, num_layers=1)
    q = RandomProjectionQuantizer(codebook_size=32, output_lengths=encoder.output_lengths)
    gen = torch.Generator().manual_seed(0)
    for t in range(7, 100, 3):  # step 3 visits every residue mod 4; lens vary below t
        lens = torch.randint(7, t + 1, (4,), generator=gen)
        lens[0] = t if t % 2 else lens[0]  # sometimes the batch is padded past its longest sample
        feats = torch.randn(4, t, 80, generator=gen)
        labels = q(feats, lens)
        with torch.no_grad(), torch_threads(1):
            out = encoder(feats, lens)
        assert labels.shape == out.hidden.shape[:2], t
        padded = torch.arange(labels.shape[1]) >= out.lens.unsqueeze(1)
        assert torch.equal(labels == IGNORE_INDEX, padded), t


@pytest.fixture(scope="module")
def speech():
    feats = speechlike_fbank(num_utts=10, seconds=3.0, seed=1)
    lens = torch.tensor([f.shape[0] for f in feats])
    return torch.nn.utils.rnn.pad_sequence(feats, batch_first=True), lens


def test_labels_stable_under_small_noise(speech):
    feats, lens = speech
    q = RandomProjectionQuantizer()
    labels = q(feats, lens)
    assert torch.equal(labels, q(feats.clone(), lens))
    valid = labels != IGNORE_INDEX
    gen = torch.Generator().manual_seed(0)

    def changed(std: float) -> float:
        noisy = q(feats + std * torch.randn(feats.shape, generator=gen), lens)
        return ((noisy != labels) & valid).sum().item() / valid.sum().item()

    # Measured: 2.8% of labels change at std 0.01, 25% at std 0.1 (normalised features have std 1).
    small, large = changed(0.01), changed(0.1)
    assert small < 0.06
    assert large > 3 * small


def code_usage(labels: torch.Tensor) -> tuple[int, float]:
    """Distinct codes and the perplexity of their distribution."""
    valid = labels[labels != IGNORE_INDEX]
    p = torch.bincount(valid).float() / valid.numel()
    p = p[p > 0]
    return valid.unique().numel(), math.exp(-(p * p.log()).sum().item())


def test_many_codes_used_on_normalised_speechlike_fbank(speech):
    feats, lens = speech
    q = RandomProjectionQuantizer(output_lengths=ConformerEncoder.output_lengths)
    frames = int(q.output_lengths(lens).sum())
    distinct, perplexity = code_usage(q(feats, lens))
    # Measured on these 730 frames: 309 distinct codes (42%), perplexity 161 (i.i.d. Gaussian input:
    # 88% distinct). Unnormalised fbank collapses onto a few codes, as BEST-RQ warns.
    assert distinct > 0.25 * frames and perplexity > 100
    raw_utts = speechlike_fbank(num_utts=10, seconds=3.0, seed=1, normalise=False)
    raw = torch.nn.utils.rnn.pad_sequence(raw_utts, batch_first=True)
    distinct_raw, perplexity_raw = code_usage(q(raw, lens))
    assert distinct_raw < 0.05 * frames and perplexity_raw < 10


def test_wrong_feature_size_is_rejected():
    with pytest.raises(ValueError, match=r"feats must be \(B, T, 80\)"):
        RandomProjectionQuantizer(codebook_size=8)(torch.randn(1, 16, 40), torch.tensor([16]))


def test_labels_unchanged_under_bf16_autocast():
    q = RandomProjectionQuantizer(codebook_size=1024)
    feats, lens = torch.randn(2, 200, 80), torch.tensor([200, 150])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = q(feats.bfloat16(), lens)
    assert torch.equal(mixed, q(feats.bfloat16().float(), lens))
