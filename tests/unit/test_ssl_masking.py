"""Span masking statistics against the closed form, and noise replacement of masked input frames."""

import pytest
import torch

from seed_asr.models.masking import apply_input_mask, span_mask


def expected_fraction(p: float, span: int, length: int) -> float:
    """Mean over t < length of P(a span starts in [t - span + 1, t]) = 1 - (1 - p)^min(t + 1, span)."""
    return sum(1 - (1 - p) ** min(t + 1, span) for t in range(length)) / length


@pytest.mark.parametrize(("p", "span"), [(0.01, 10), (0.05, 4), (0.2, 1)])
def test_masked_fraction_matches_formula(p, span):
    gen = torch.Generator().manual_seed(0)
    lens = torch.full((400,), 500)
    mask = span_mask(lens, p, span, generator=gen)
    frac = mask.float().mean().item()
    exact = expected_fraction(p, span, 500)
    # 200k frames, correlated over `span`: the standard error is well under 1% relative.
    assert frac == pytest.approx(exact, rel=0.03)
    assert exact == pytest.approx(1 - (1 - p) ** span, rel=0.03)  # long sequences: BEST-RQ's figure


def test_spans_are_contiguous_runs_within_lengths():
    gen = torch.Generator().manual_seed(1)
    lens = torch.randint(1, 200, (64,), generator=gen)
    mask = span_mask(lens, 0.02, 10, generator=gen, num_frames=210)
    assert mask.shape == (64, 210)
    assert not (mask & (torch.arange(210) >= lens.unsqueeze(1))).any()
    for row, n in zip(mask, lens.tolist(), strict=True):
        # Each run of masked frames is a union of spans: at least 10 long unless cut by the length.
        edges = torch.diff(torch.cat([torch.zeros(1), row.float(), torch.zeros(1)]))
        starts, ends = (edges == 1).nonzero().flatten(), (edges == -1).nonzero().flatten()
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            assert e - s >= 10 or e == n


def test_min_spans_gives_every_utterance_a_span():
    gen = torch.Generator().manual_seed(2)
    lens = torch.tensor([25, 12, 0, 40] * 50)
    plain = span_mask(lens, 0.01, 10, generator=gen)
    assert (plain.sum(1)[lens > 0] == 0).any()  # short utterances often draw no span at p=0.01
    forced = span_mask(lens, 0.01, 10, generator=gen, min_spans=1)
    counts = forced.sum(1)
    assert (counts[lens > 0] > 0).all() and (counts[lens == 0] == 0).all()
    assert (counts <= lens).all()


def test_seeded_and_validated():
    lens = torch.tensor([50, 30])
    a = span_mask(lens, 0.1, 5, generator=torch.Generator().manual_seed(7))
    b = span_mask(lens, 0.1, 5, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="mask_prob"):
        span_mask(lens, 1.5, 5)
    with pytest.raises(ValueError, match="exceed num_frames"):
        span_mask(lens, 0.1, 5, num_frames=40)


def test_noise_replaces_exactly_the_masked_input_frames():
    gen = torch.Generator().manual_seed(3)
    feats = torch.randn(3, 45, 80, generator=gen) + 5  # far from the noise's N(0, 0.1)
    mask = torch.zeros(3, 11, dtype=torch.bool)
    mask[0, 2:5] = True
    mask[1, 10] = True  # last encoder frame: input frames 40..43 (44 is past 11 * 4)
    out = apply_input_mask(feats, mask, stack=4, noise_std=0.1, generator=gen)
    expected = torch.zeros(3, 45, dtype=torch.bool)
    expected[0, 8:20] = True
    expected[1, 40:44] = True
    changed = (out != feats).any(-1)
    assert torch.equal(changed, expected)
    noise = out[expected]
    assert noise.mean().abs() < 0.01 and noise.std().item() == pytest.approx(0.1, rel=0.05)
    assert out.data_ptr() != feats.data_ptr() and (feats > 0).all()  # input untouched


def test_mask_batch_size_must_match():
    with pytest.raises(ValueError, match="mask"):
        apply_input_mask(torch.zeros(2, 8, 80), torch.zeros(3, 2, dtype=torch.bool))
