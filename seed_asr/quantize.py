"""``seed-asr quantize ckpt=<run or checkpoint> [checkpoint=best] quant=<name> [method=...]``: post-training
quantization.

Writes into the run folder the packed quantized model with what ``seed-asr eval`` / ``transcribe`` need
to rebuild it (see ``seed_asr.artifacts.quantized``) and ``quant_report.json``: per-layer relative output
errors, block-wise losses, quantization time, size on disk against fp16 / fp32.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from seed_asr.artifacts.loading import load_speech_llm, pick_device
from seed_asr.artifacts.quantized import is_quantized_dir
from seed_asr.artifacts.serialization import cmvn_to_dict
from seed_asr.quant.spec import QuantSpec
from seed_asr.quant.speech_llm import calibration_batches, quantize_to_folder

log = logging.getLogger(__name__)


def quantize(cfg: DictConfig) -> dict[str, Any]:
    """Quantize ``cfg.ckpt`` with ``cfg.quant`` (method / blockwise overridable) into ``paths.output_dir``.

    Returns:
        The report written to ``quant_report.json``.
    """
    spec = QuantSpec.from_cfg(cfg.quant, cfg.get("method"), cfg.get("blockwise"))
    if is_quantized_dir(cfg.ckpt):
        raise ValueError(f"ckpt={cfg.ckpt} is already quantized; give a float stage checkpoint")
    out = Path(cfg.paths.output_dir)
    device = pick_device(cfg.device)
    loaded = load_speech_llm(cfg.ckpt, device, checkpoint=cfg.checkpoint)
    batches = []
    if spec.calib_batches:  # 0: data-free (plain RTN), no corpus read
        datamodule = instantiate(cfg.data, output_dir=str(out))
        batches = calibration_batches(datamodule.train_dataloader(), loaded.features, spec.calib_batches,
                                      device)
    report = quantize_to_folder(
        loaded.model, batches, spec, out, OmegaConf.to_container(loaded.cfg, resolve=True),
        cmvn_to_dict(loaded.features.cmvn), device, cfg.backend, ckpt=str(loaded.source),
    )
    log.info("%s (%s): mean relative error %.4f, %.1f s, %.3f x fp16 size -> %s", spec.name,
             spec.config.method, report["mean_error"], report["seconds"], report["size"]["ratio_vs_fp16"],
             out)
    return report


@hydra.main(config_path="conf", config_name="quantize", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    quantize(cfg)


if __name__ == "__main__":
    main()
