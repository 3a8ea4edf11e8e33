"""decoupleQ inside a training run: quantize a copy of the speech LLM and validate it like the float one.

At the end of training (and optionally every N validation runs) the callback

1. gathers the full float weights (a collective under DeepSpeed ZeRO-3, a plain copy otherwise) into a
   fresh model on global rank 0 — the training model and optimizer state are never touched;
2. on rank 0: quantizes the copy segment by segment on ``quant.calib_batches`` training batches
   (fbank without SpecAugment), and saves the packed, self-contained folder
   ``<run>/quantized/<name>`` (the format ``seed-asr eval`` loads) while the other ranks wait at a
   barrier (mind the process-group timeout for large models);
3. on every rank: loads that folder (the run folder is on storage every rank sees, as for Lightning
   checkpoints) and decodes its own share of the validation set; the transcripts are all-gathered,
   so every rank computes the same WER (the same code and decoding as ``ASRModule`` validation);
4. on rank 0: logs ``val_<name>/wer`` etc. beside the float ``val/wer``, per-layer quantization
   errors (``quant_<name>/error/<layer>``), the quantization time and the size on disk.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig

from seed_asr.artifacts.builders import build_speech_llm
from seed_asr.artifacts.loading import load_speech_llm
from seed_asr.artifacts.quantized import read_report
from seed_asr.artifacts.serialization import cmvn_to_dict
from seed_asr.decoding.evaluation import decode_and_score
from seed_asr.quant.spec import QuantSpec
from seed_asr.quant.speech_llm import calibration_batches, check_spec, quantize_to_folder

log = logging.getLogger(__name__)


class DecoupleQCallback(Callback):
    """Quantize a copy of the model and validate it beside the full-precision model.

    Args:
        quant: a ``conf/quant`` node (validated here, so a bad config fails before training starts).
        every_n_val: also run after every N-th validation (None: only at the end of training).
        at_train_end: run when training ends.
        backend: ``QuantLinear`` forward backend for the quantized validation ("auto": Triton kernels
            on GPUs, the torch reference on CPUs).
    """

    def __init__(self, quant: DictConfig | Mapping[str, Any], every_n_val: int | None = None,
                 at_train_end: bool = True, backend: str = "auto") -> None:
        super().__init__()
        self.spec = QuantSpec.from_cfg(quant)
        if every_n_val is not None and every_n_val < 1:
            raise ValueError(f"every_n_val must be None or >= 1, got {every_n_val}")
        self.every_n_val, self.at_train_end, self.backend = every_n_val, at_train_end, backend
        self._validations = 0

    @property
    def prefix(self) -> str:
        """Metric prefix of the quantized validation, e.g. ``val_w2g64``."""
        return f"val_{self.spec.name}"

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Check the module and the layer widths against the quant config before the first step."""
        for attr in ("model", "decoding", "tokenizer", "model_cfg"):
            if getattr(pl_module, attr, None) is None:
                raise TypeError(f"DecoupleQCallback needs an ASR stage module (with .{attr}); "
                                f"got {type(pl_module).__name__}")
        check_spec(pl_module.model, self.spec)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.every_n_val is None or trainer.sanity_checking:
            return
        self._validations += 1
        if self._validations % self.every_n_val == 0:
            self.run(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.at_train_end:
            self.run(trainer, pl_module)

    def run(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """Quantize (rank 0), validate (all ranks), log (rank 0); returns the logged metrics."""
        out_dir = Path(trainer.default_root_dir) / "quantized" / self.spec.name
        device = pl_module.device
        datamodule = trainer.datamodule
        state = full_state_dict(pl_module.model, trainer.is_global_zero)
        if trainer.is_global_zero:
            self._quantize_and_save(pl_module, datamodule, state, out_dir, device)
        trainer.strategy.barrier("decoupleq_saved")
        loaded = load_speech_llm(out_dir, device, backend=self.backend)
        metrics = decode_and_score(loaded.model, datamodule.val_dataloader(), datamodule.features,
                                   pl_module.decoding, device)
        logged = {f"{self.prefix}/{k}": v for k, v in metrics.items()}
        logged.update(self._report_metrics(read_report(out_dir)))
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(logged, step=trainer.global_step)
            log.info("%s: WER %.4f (float val/wer %s)", self.prefix, metrics.get("wer", float("nan")),
                     trainer.callback_metrics.get("val/wer"))
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in logged.items()})
        trainer.strategy.barrier("decoupleq_validated")
        return logged

    def _quantize_and_save(self, pl_module: L.LightningModule, datamodule: Any,
                           state: dict[str, torch.Tensor], out_dir: Path, device: torch.device) -> None:
        model = build_speech_llm(pl_module.model_cfg, pl_module.tokenizer)
        model.load_state_dict(state)
        model.to(device)
        batches = calibration_batches(datamodule.train_dataloader(), datamodule.features,
                                      self.spec.calib_batches, device)
        quantize_to_folder(model, batches, self.spec, out_dir, pl_module.run_config,
                           cmvn_to_dict(datamodule.features.cmvn), device, self.backend,
                           step=pl_module.global_step)

    def _report_metrics(self, report: dict[str, Any]) -> dict[str, float]:
        q = f"quant_{self.spec.name}"
        out = {f"{q}/error/{name}": float(r["error"]) for name, r in report["layers"].items()}
        out.update({f"{q}/mean_error": float(report["mean_error"]), f"{q}/seconds": float(report["seconds"]),
                    f"{q}/size_ratio_vs_fp16": float(report["size"]["ratio_vs_fp16"])})
        return out


def full_state_dict(model: torch.nn.Module, keep: bool) -> dict[str, torch.Tensor]:
    """The model's full float state dict on the CPU (kept only where ``keep``; empty elsewhere).

    Under DeepSpeed ZeRO-3 the partitioned parameters are gathered first: every rank must call this.
    """
    params = list(model.parameters())
    if any(hasattr(p, "ds_id") for p in params):
        import deepspeed  # only present, and only needed, under DeepSpeed

        context = deepspeed.zero.GatheredParameters(params)
    else:
        context = nullcontext()
    with context:
        if not keep:
            return {}
        return {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype, copy=True)
                for k, v in model.state_dict().items()}
