"""Triton kernels against the torch reference (CPU: Triton interpreter; GPU: compiled + autotuned).

Tolerance: max |y - y_ref| <= tol * max |y_ref| with y_ref the float32 reference on the same
(rounded) inputs; tol = 1e-5 (fp32), 2e-3 (fp16), 1e-2 (bf16): the kernels accumulate in float32 and
differ from it only by rounding W_hat or the output to the activation dtype.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    # @triton.jit reads TRITON_INTERPRET when the kernels are defined, so set it before their import.
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")

from decoupleq.kernels import dequant_matmul, dequant_matmul_reference  # noqa: E402
from decoupleq.kernels.packing import pack  # noqa: E402
from decoupleq.kernels.reference import dequantize  # noqa: E402
from decoupleq.kernels.triton import dequant_matmul_triton, dequantize_triton  # noqa: E402
from decoupleq.nn import QuantLinear  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}
M_OF_PATH = {"gemv": 3, "dequant": 70}


def _config(path: str) -> dict:
    """Fixed large blocks (fast under the interpreter, one compilation per case on a GPU)."""
    if path == "gemv":  # BLOCK_K = 128 > some group sizes: a tile spans several groups
        return {"BLOCK_N": 128, "BLOCK_K": 128, "SPLIT_K": 2}
    return {"BLOCK_N": 128, "BLOCK_K": 64}


def _operands(n: int, k: int, bits: int, group: int, dtype: torch.dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    groups = 1 if group == -1 else -(-k // group)
    q = torch.randint(-(1 << (bits - 1)), 1 << (bits - 1), (n, k), generator=g)
    scale = (torch.rand(n, groups, generator=g) * 0.1 + 0.01).to(dtype)
    zero = (torch.randn(n, groups, generator=g) * 0.05).to(dtype)
    bias = torch.randn(n, generator=g).to(dtype)
    return pack(q, bits).to(DEVICE), scale.to(DEVICE), zero.to(DEVICE), bias.to(DEVICE)


def _check(x, packed, scale, zero, bits, group, bias, path) -> None:
    y = dequant_matmul_triton(x, packed, scale, zero, bits, group, bias, path=path, config=_config(path))
    f32 = lambda t: None if t is None else t.float()
    ref = dequant_matmul_reference(f32(x), packed, f32(scale), f32(zero), bits, group, f32(bias))
    assert y.dtype == x.dtype and y.shape == ref.shape
    err = (y.float() - ref).abs().max().item()
    assert err <= TOL[x.dtype] * ref.abs().max().item(), (err, ref.abs().max().item())


@pytest.mark.parametrize("path", ["gemv", "dequant"])
@pytest.mark.parametrize("group", [32, 64, 128, -1])
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_kernel_matches_reference_fp16(bits: int, group: int, path: str) -> None:
    # N = 100 and K = 200 are ragged against every block size; K is not a multiple of the group either.
    packed, scale, zero, bias = _operands(100, 200, bits, group, torch.float16)
    x = torch.randn(M_OF_PATH[path], 200, generator=torch.Generator().manual_seed(1)).half().to(DEVICE)
    _check(x, packed, scale, zero, bits, group, bias, path)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("path", ["gemv", "dequant"])
def test_kernel_matches_reference_other_dtypes(dtype: torch.dtype, path: str) -> None:
    packed, scale, zero, bias = _operands(96, 160, 2, 64, dtype, seed=2)
    x = torch.randn(2, M_OF_PATH[path], 160, generator=torch.Generator().manual_seed(3)).to(dtype).to(DEVICE)
    _check(x, packed, scale, zero, 2, 64, bias, path)


@pytest.mark.parametrize(("m", "split"), [(1, 1), (2, 5), (16, 3)])
def test_gemv_split_k_without_bias_and_eight_bits(m: int, split: int) -> None:
    # 5 splits of 4 tiles: the last split gets none and must still write (zero) partial sums.
    packed, scale, zero, _ = _operands(64, 512, 8, 128, torch.float16, seed=4)
    x = torch.randn(m, 512, generator=torch.Generator().manual_seed(5)).half().to(DEVICE)
    y = dequant_matmul_triton(x, packed, scale, zero, 8, 128, path="gemv",
                              config={"BLOCK_N": 64, "BLOCK_K": 128, "SPLIT_K": split})  # fmt: skip
    ref = dequant_matmul_reference(x.float(), packed, scale.float(), zero.float(), 8, 128)
    assert (y.float() - ref).abs().max().item() <= TOL[torch.float16] * ref.abs().max().item()


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_dequantize_matches_reference_transposed(bits: int) -> None:
    # Row-major scales here (QuantLinear stores them column-major): the kernel takes any strides.
    packed, scale, zero, _ = _operands(72, 100, bits, 32, torch.float32, seed=7)
    config = {"BLOCK_N": 64, "BLOCK_K": 64}
    w = dequantize_triton(packed, scale, zero, bits, 32, 100, torch.float32, config=config)
    torch.testing.assert_close(w, dequantize(packed, scale, zero, bits, 32, 100).T, rtol=1e-6, atol=1e-6)


def test_auto_path_gives_the_same_result_on_both_sides_of_the_switch() -> None:
    packed, scale, zero, bias = _operands(64, 96, 2, 32, torch.float32, seed=8)
    x = torch.randn(17, 96, generator=torch.Generator().manual_seed(9)).to(DEVICE)
    y_dequant = dequant_matmul_triton(x, packed, scale, zero, 2, 32, bias)  # 17 rows: dequant + matmul
    y_gemv = torch.cat([dequant_matmul_triton(x[:9], packed, scale, zero, 2, 32, bias),
                        dequant_matmul_triton(x[9:], packed, scale, zero, 2, 32, bias)])  # fmt: skip
    torch.testing.assert_close(y_gemv, y_dequant, rtol=1e-5, atol=1e-5)


def test_quant_linear_triton_backend_forward_and_gradients() -> None:
    packed, scale, zero, bias = _operands(48, 128, 2, 32, torch.float32, seed=6)
    layers = []
    for backend in ("triton", "torch"):
        layer = QuantLinear(128, 48, 2, 32, backend=backend, device=DEVICE)
        with torch.no_grad():
            layer.packed.copy_(packed)
            layer.scale.copy_(scale)
            layer.zero.copy_(zero)
            layer.bias.copy_(bias)
        layers.append(layer)
    x = torch.randn(3, 128, device=DEVICE)
    for layer in layers:
        layer(x).square().sum().backward()
    fast, slow = layers
    torch.testing.assert_close(fast.scale.grad, slow.scale.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fast.zero.grad, slow.zero.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fast(x), slow(x), rtol=1e-5, atol=1e-5)


def test_triton_rejects_unsupported_group_size_and_block_k() -> None:
    packed, scale, zero, _ = _operands(16, 96, 2, 48, torch.float32)
    with pytest.raises(ValueError, match="group_size"):
        dequant_matmul(torch.randn(2, 96, device=DEVICE), packed, scale, zero, 2, 48, backend="triton")
    packed, scale, zero, _ = _operands(16, 96, 2, 32, torch.float32)
    with pytest.raises(ValueError, match="BLOCK_K"):
        dequant_matmul_triton(torch.randn(2, 96, device=DEVICE), packed, scale, zero, 2, 32,
                              config={"BLOCK_N": 64, "BLOCK_K": 48})  # fmt: skip
