"""Stage ``quant_sft`` (decoupleQ + SFT): fine-tune only the float parts of a quantized speech LLM.

The integer codes are buffers of ``QuantLinear`` and never change; the trainable parameters are every
``QuantLinear`` scale and zero, the norm layers' weights and biases (``stage.train_norms``) and the
quantized layers' biases (``stage.train_biases``); everything else is frozen. The loss is the ASR
training loss. At the end of training the result is written in the packed quantized format to
``<run>/quantized`` (load it with ``seed-asr eval ckpt=<run>/quantized``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

from decoupleq.blockwise import float_parameters
from seed_asr.artifacts.loading import load_speech_llm
from seed_asr.artifacts.quantized import read_meta, save_quantized_speech_llm
from seed_asr.artifacts.serialization import cmvn_to_dict
from seed_asr.lit.asr_module import ASRModule

log = logging.getLogger(__name__)


class QuantSFTModule(ASRModule):
    """ASR training step on a quantized model whose only trainable parameters are its float parts.

    Stage options: ``quantized`` (a quantized folder), ``train_norms``, ``train_biases``, and those of
    ``ASRModule``. The model config and the tokenizer come from the quantized folder, not ``model``.
    """

    uses_tokenizer = False

    def build_model(self) -> nn.Module:
        stage = self.stage
        loaded = load_speech_llm(stage.quantized, backend=stage.get("backend", "auto"))
        self.source = read_meta(stage.quantized)
        model = loaded.model.float().train()
        self.tokenizer = model.tokenizer
        self.init_step_options()
        floats = float_parameters(model, bool(stage.train_norms), bool(stage.train_biases))
        trainable = {id(p) for p in floats}
        for p in model.parameters():
            p.requires_grad_(id(p) in trainable)
        return model

    def on_train_end(self) -> None:
        """Write the fine-tuned model in the packed quantized format (rank 0)."""
        if not self.trainer.is_global_zero:
            return
        out = Path(self.trainer.default_root_dir) / "quantized"
        sft = {"steps": self.global_step, "from": str(self.stage.quantized)}
        quant = {**self.source["quant"], "sft": sft}
        save_quantized_speech_llm(
            self.model,
            out,
            self.source["cfg"],
            self.tokenizer,
            cmvn_to_dict(self.trainer.datamodule.features.cmvn),
            quant,
        )
        log.info("quant_sft: packed model written to %s", out)
