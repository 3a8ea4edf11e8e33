"""decoupleQ: 2-bit weight-only post-training quantization.

Quantize a model block by block (:func:`quantize_model`, configured by :class:`QuantConfig`), run it
through :class:`QuantLinear` (forward by :func:`dequant_matmul`: a Triton kernel when Triton can run,
the torch reference otherwise), and store it with :func:`save_quantized` / :func:`load_quantized`.
Needs torch and safetensors; Triton is optional (imported only when its kernels run).
"""

from decoupleq.baselines import gptq_quantize, rtn_clip_quantize, rtn_quantize
from decoupleq.blockwise import RefineResult, refine_block
from decoupleq.checkpoint import load_quantized, read_header, save_quantized
from decoupleq.config import QuantConfig
from decoupleq.driver import LayerReport, QuantReport, quantize_model
from decoupleq.kernels import dequant_matmul
from decoupleq.nn import QuantLinear
from decoupleq.quantizer import QuantResult
from decoupleq.solver import LayerQuantizer, decoupleq_quantize, float_step, quantize_layer

__all__ = [
    "LayerQuantizer", "LayerReport", "QuantConfig", "QuantLinear", "QuantReport", "QuantResult",
    "RefineResult", "decoupleq_quantize", "dequant_matmul", "float_step", "gptq_quantize",
    "load_quantized", "quantize_layer", "quantize_model", "read_header", "refine_block", "rtn_clip_quantize",
    "rtn_quantize", "save_quantized",
]
