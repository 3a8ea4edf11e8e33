"""The SSL pieces on an accelerator: generators on the device, bf16 autocast, labels as on the CPU."""

import pytest
import torch
from ssl_fixtures import tiny_conformer

from seed_asr.models.kmeans import fit_kmeans
from seed_asr.models.ssl import MaskConfig, SSLHead, ssl_step
from seed_asr.models.ssl_targets import RandomProjectionQuantizer
from seed_asr.testing.threads import torch_threads

NO_GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
DEVICES = ["cpu", pytest.param("cuda", marks=NO_GPU)]


@pytest.mark.parametrize("device", DEVICES)
def test_quantizer_labels_agree_with_cpu(device):
    q = RandomProjectionQuantizer()
    gen = torch.Generator().manual_seed(0)
    feats, lens = torch.randn(4, 800, 80, generator=gen), torch.tensor([800, 700, 500, 33])
    cpu = q(feats, lens)
    here = q.to(device)(feats.to(device), lens.to(device))
    assert here.device.type == device
    # Different matmul kernels may flip a near-tie; nearly every label must agree.
    assert (here.cpu() == cpu).float().mean() > 0.995


@pytest.mark.parametrize("device", DEVICES)
def test_ssl_step_under_bf16_autocast_with_a_device_generator(device):
    torch.manual_seed(0)
    encoder = tiny_conformer(d_model=16, num_layers=1).to(device)
    head = SSLHead(16, codebook_size=64).to(device)
    q = RandomProjectionQuantizer(codebook_size=64, output_lengths=encoder.output_lengths).to(device)
    gen = torch.Generator(device=device).manual_seed(0)
    feats, lens = torch.randn(2, 120, 80, device=device), torch.tensor([120, 77], device=device)
    batch = {"feats": feats, "feat_lens": lens}
    with torch_threads(1), torch.autocast(device, dtype=torch.bfloat16):
        out = ssl_step(encoder, head, q, batch, MaskConfig(mask_prob=0.05, span=5), gen)
    out["loss"].backward()
    assert out["loss"].device.type == device and torch.isfinite(out["loss"])
    assert all(p.grad is not None for p in head.parameters())


@pytest.mark.parametrize("device", DEVICES)
def test_kmeans_on_device(device):
    centres = torch.tensor([[0.0, 0, 0], [8, 0, 0], [0, 8, 0], [0, 0, 8]])
    gen = torch.Generator().manual_seed(0)
    x = (centres.repeat_interleave(300, 0) + 0.5 * torch.randn(1200, 3, generator=gen)).to(device)
    result = fit_kmeans(x, 4, generator=torch.Generator(device=device).manual_seed(0))
    assert result.centroids.device.type == device
    found = result.centroids.cpu()[torch.cdist(centres, result.centroids.cpu()).argmin(1)]
    assert torch.allclose(found, centres, atol=0.15)


def test_quantizer_is_built_on_the_cpu_under_another_default_device():
    """Lightning builds modules under the accelerator as default device (meta stands in for it here);
    the projection and codebooks still come from the CPU generator, the same as a plain build."""
    plain = RandomProjectionQuantizer(seed=3)
    with torch.device("meta"):
        built = RandomProjectionQuantizer(seed=3)
    torch.testing.assert_close(built.projection, plain.projection, rtol=0, atol=0)
    torch.testing.assert_close(built.codebooks, plain.codebooks, rtol=0, atol=0)
