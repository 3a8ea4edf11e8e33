"""What every training stage shares: build inside ``configure_model``, initialise from an earlier
stage, freeze by regex, log parameter counts, and optimizers/schedulers from config."""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn
from transformers import PreTrainedTokenizerBase

from seed_asr.artifacts.serialization import cmvn_to_dict, tokenizer_to_files
from seed_asr.corpus.texts import invent_entity
from seed_asr.data.contexts import check_fractions, mix_contexts, rename_entities
from seed_asr.utils.checkpoints import CMVN_KEY, TOKENIZER_KEY
from seed_asr.utils.params import count_parameters, freeze_by_regex, init_from_checkpoint, init_sources

log = logging.getLogger(__name__)


class StageModule(L.LightningModule):
    """Base LightningModule of a stage; subclasses implement ``build_model`` and the steps.

    It receives what it needs (the entry point, `seed_asr.train.build_module`, resolves it):
    ``stage`` (the stage's options), ``model`` (the model config), ``seed``, ``decoding`` (validation
    decoding settings), ``tokenizer`` (resolved when the class ``uses_tokenizer``) and ``run_config``
    (the run's whole resolved config, stored as the checkpoints' ``hyper_parameters.cfg`` record).

    Stage options: ``init_from`` (checkpoint path, or a list of
    ``{path, include, checkpoint}`` entries), ``init_checkpoint`` (``last`` or ``best``: the checkpoint
    of a run folder in ``init_from`` unless the entry names one), ``freeze`` (regexes over ``self.model``
    parameter names),
    ``optimizer`` and ``scheduler`` (Hydra partials), ``context_mix`` (kind -> fraction of training
    samples whose prompt carries that context; `seed_asr.data.contexts`; null or absent: no context).
    """

    uses_tokenizer: ClassVar[bool] = False

    def __init__(
        self,
        stage: DictConfig,
        model: DictConfig,
        seed: int = 0,
        decoding: DictConfig | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        run_config: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.stage, self.model_cfg, self.seed, self.decoding_cfg = stage, model, seed, decoding
        self.tokenizer = tokenizer
        # plain containers only, so checkpoints load with weights_only=True
        self.run_config = dict(run_config or {})
        self.save_hyperparameters({"cfg": self.run_config})
        self.model: nn.Module | None = None
        self.param_counts: dict[str, int] = {}
        mix = stage.get("context_mix")
        self.context_mix = check_fractions(mix) if mix else None

    def batch_rng(self, batch_idx: int, purpose: str = "") -> random.Random:
        """A random source for one training batch, deterministic from ``seed``, the rank, the epoch, the
        batch and what it draws (``purpose``: independent draws per purpose)."""
        key = f"{self.seed}/{self.global_rank}/{self.current_epoch}/{batch_idx}"
        return random.Random(f"{key}/{purpose}" if purpose else key)

    def training_contexts(self, metas: Sequence[Mapping[str, Any]], batch_idx: int) -> list[Any] | None:
        """The prompt contexts of a training batch under ``context_mix`` (None: no context at all),
        drawn per sample, deterministic from ``seed``, the rank, the epoch and the batch."""
        if self.context_mix is None:
            return None
        rng = self.batch_rng(batch_idx)
        return mix_contexts(metas, self.context_mix, rng)

    def renamed_samples(
        self,
        texts: Sequence[str],
        contexts: Sequence[Any],
        metas: Sequence[Mapping[str, Any]],
        batch_idx: int,
        share: float,
    ) -> tuple[list[str], list[Any]]:
        """The transcripts and their prompt contexts with, per sample that has names
        (``context.entities``) and with probability ``share``, every name renamed to a newly invented
        one in both (`seed_asr.data.contexts.rename_entities`): a name then never recurs, so only the
        prompt can tell it. Deterministic from ``seed``, the rank, the epoch and the batch."""
        texts, contexts = list(texts), list(contexts)
        rng = self.batch_rng(batch_idx, "names")
        for i, meta in enumerate(metas):
            entities = (meta.get("context") or {}).get("entities") or []
            if entities and rng.random() < share:
                lang = str(meta.get("lang") or "en")
                invent = functools.partial(invent_entity, lang, rng)
                texts[i], contexts[i] = rename_entities(texts[i], contexts[i], entities, lang, invent)
        return texts, contexts

    def build_model(self) -> nn.Module:
        """Return the stage's model (called once, inside ``configure_model``)."""
        raise NotImplementedError

    def configure_model(self) -> None:
        if self.model is not None:
            return
        self.model = self.build_model()
        stage = self.stage
        for source in init_sources(stage):
            init_from_checkpoint(
                self.model, source["path"], source.get("include", [".*"]), checkpoint=source["checkpoint"]
            )
        freeze_by_regex(self.model, list(stage.get("freeze") or []))
        # under ZeRO-3 (built inside deepspeed.zero.Init) each rank holds only its partition: "local"
        self.param_counts = count_parameters(self.model)
        log.info(
            "%s: %d trainable of %d parameters, %d held by this process",
            stage.name,
            self.param_counts["trainable"],
            self.param_counts["total"],
            self.param_counts["local"],
        )

    def on_fit_start(self) -> None:
        counts = count_parameters(self.model)
        for logger in self.loggers:
            logger.log_hyperparams({f"params/{k}": v for k, v in counts.items()})

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Make checkpoints self-contained: the tokenizer files and the CMVN statistics travel along."""
        tokenizer = getattr(self, "tokenizer", None)
        if tokenizer is not None:
            checkpoint[TOKENIZER_KEY] = tokenizer_to_files(tokenizer)
        features = getattr(self.trainer.datamodule, "features", None) if self._trainer else None
        if features is not None:
            checkpoint[CMVN_KEY] = cmvn_to_dict(features.cmvn)

    def configure_optimizers(self) -> Any:
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"stage {self.stage.name}: every parameter is frozen, nothing to train")
        optimizer = instantiate(self.stage.optimizer)(params)
        if not self.stage.get("scheduler"):
            return optimizer
        scheduler = instantiate(self.stage.scheduler)(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
