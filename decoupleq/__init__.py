"""decoupleQ: 2-bit weight-only post-training quantization."""

# --- algorithm, baselines, driver (branch dq-algo) ---
from decoupleq.baselines import gptq_quantize, rtn_quantize
from decoupleq.blockwise import RefineResult, refine_block
from decoupleq.config import QuantConfig
from decoupleq.driver import LayerReport, QuantReport, quantize_model
from decoupleq.quantizer import QuantResult
from decoupleq.solver import LayerQuantizer, decoupleq_quantize, float_step, quantize_layer

__all__ = [
    "LayerQuantizer", "LayerReport", "QuantConfig", "QuantReport", "QuantResult", "RefineResult",
    "decoupleq_quantize", "float_step", "gptq_quantize", "quantize_layer",
    "quantize_model", "refine_block", "rtn_quantize",
]
# --- end dq-algo ---
