"""One masked-prediction step composed from the pieces, with the stand-in encoder."""

import pytest
import torch
from ssl_fixtures import speechlike_fbank, tiny_conformer

from seed_asr.models.kmeans import KMeansTokenizer
from seed_asr.models.ssl import MaskConfig, SSLHead, ssl_step
from seed_asr.models.ssl_targets import KMeansTarget, RandomProjectionQuantizer
from seed_asr.testing.threads import torch_threads


@pytest.fixture(scope="module")
def batch():
    feats = speechlike_fbank(num_utts=4, seconds=1.0, seed=2)
    lens = torch.tensor([f.shape[0] for f in feats])
    return {"feats": torch.nn.utils.rnn.pad_sequence(feats, batch_first=True), "feat_lens": lens}


def test_overfits_a_fixed_batch(batch):
    torch.manual_seed(0)
    encoder = tiny_conformer(d_model=32)
    quantizer = RandomProjectionQuantizer(codebook_size=32, output_lengths=encoder.output_lengths)
    head = SSLHead(encoder.d_model, codebook_size=32)
    opt = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=1e-2)
    cfg = MaskConfig(mask_prob=0.05, span=5)
    losses = []
    with torch_threads(1):
        for _ in range(40):
            # Same seed each step: the same mask and noise, so the batch can be memorised.
            out = ssl_step(encoder, head, quantizer, batch, cfg, torch.Generator().manual_seed(0))
            opt.zero_grad()
            out["loss"].backward()
            opt.step()
            losses.append(out["loss"].item())
    assert 0.1 < out["mask_frac"].item() < 0.5
    assert losses[0] > 3.0  # about log(32) = 3.47 at the start
    # Measured: 3.54 -> 0.004 in 40 steps, accuracy 1.0 on the masked frames.
    assert losses[-1] < 0.1 * losses[0] and out["acc"].item() > 0.9
    assert all(p.grad is None for p in quantizer.parameters())  # the quantizer has none: frozen buffers


def test_kmeans_target_round(batch):
    torch.manual_seed(0)
    previous = tiny_conformer(d_model=16)
    tok = KMeansTokenizer(6, 16)
    tok.set_centroids(torch.randn(6, 16))
    target = KMeansTarget(previous, tok, layer=1)
    encoder = tiny_conformer(d_model=16)
    with torch_threads(1):
        out = ssl_step(encoder, SSLHead(16, 6), target, batch, MaskConfig(), torch.Generator().manual_seed(0))
    assert torch.isfinite(out["loss"]) and out["loss"].requires_grad and out["mask_frac"] > 0


def test_encoder_disagreeing_with_targets_is_reported(batch):
    encoder = tiny_conformer(d_model=16, num_layers=1)
    quantizer = RandomProjectionQuantizer(codebook_size=8)  # default lens // 4, not the encoder's lengths
    with pytest.raises(ValueError, match="disagree"), torch_threads(1):
        ssl_step(encoder, SSLHead(16, 8), quantizer, batch, MaskConfig(), torch.Generator().manual_seed(0))
