"""Bit packing: exact round trips, the documented word layout, and clear errors."""

from __future__ import annotations

import pytest
import torch

from decoupleq.kernels.packing import pack, packed_rows, padded_k, unpack


def _codes(n: int, k: int, bits: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-(1 << (bits - 1)), 1 << (bits - 1), (n, k), generator=g, dtype=torch.int8)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("k", [1, 31, 32, 33, 100, 256])
def test_round_trip_is_identity(bits: int, k: int) -> None:
    q = _codes(7, k, bits)
    packed = pack(q, bits)
    assert packed.dtype == torch.int32 and packed.shape == (packed_rows(k, bits), 7)
    assert packed.shape[0] * 32 == padded_k(k) * bits  # exactly `bits` bits per (padded) weight
    assert torch.equal(unpack(packed, bits, k), q)


def test_round_trip_covers_extreme_codes() -> None:
    for bits in (2, 3, 4, 8):
        q = torch.tensor([[-(1 << (bits - 1)), (1 << (bits - 1)) - 1] * 16], dtype=torch.int8)
        assert torch.equal(unpack(pack(q, bits), bits, 32), q)


def test_two_bit_word_layout_matches_hand_computation() -> None:
    # One row, K = 32: u = q + 2 = k % 4; code k sits at bit 2 * (k % 16) of word k // 16.
    q = (torch.arange(32) % 4 - 2).view(1, 32)
    expected = sum((j % 4) << (2 * j) for j in range(16))  # same for both words
    expected -= 1 << 32 if expected >= 1 << 31 else 0
    assert pack(q, 2).flatten().tolist() == [expected, expected]


def test_three_bit_planes_hold_low_bits_then_high_bit() -> None:
    # u = q + 4 = 7 everywhere: low plane words all ones (two's complement -1), high plane all ones.
    q = torch.full((2, 64), 3, dtype=torch.int8)
    packed = pack(q, 3)
    assert packed.shape == (6, 2)  # 4 rows of the 2-bit plane, 2 rows of the 1-bit plane
    assert (packed == -1).all()
    q[:, 0] = -4  # u = 0: bit 0-1 of word 0 and bit 0 of the first high-plane word clear
    packed = pack(q, 3)
    assert packed[0, 0].item() == -1 - 3 and packed[4, 0].item() == -1 - 1


def test_pack_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="outside"):
        pack(torch.tensor([[2]]), 2)
    with pytest.raises(ValueError, match="bits"):
        pack(torch.zeros(1, 4, dtype=torch.int8), 5)
    with pytest.raises(ValueError, match="integer"):
        pack(torch.zeros(1, 4), 2)
    with pytest.raises(ValueError, match="rows"):
        unpack(pack(_codes(2, 64, 2), 2), 2, 100)
