"""Stage ``ssl``: LUISE / BEST-RQ masked prediction, with an optional k-means ("iterative") round.

Round 1 labels each 40 ms frame with a frozen random-projection quantizer of the stacked fbank.
Round 2 (``stage.kmeans`` set) labels it with k-means ids of an intermediate layer of the round-1
encoder; k-means is fitted on rank 0 at start-up and broadcast, so every rank has the same targets.
"""

from __future__ import annotations

import logging

import torch
from hydra.utils import instantiate
from torch import nn

from seed_asr.lit.stage_module import StageModule
from seed_asr.models.kmeans import KMeansTokenizer, fit_kmeans
from seed_asr.models.ssl import MaskConfig, SSLHead, ssl_step
from seed_asr.models.ssl_targets import KMeansTarget, RandomProjectionQuantizer, collect_features
from seed_asr.utils.params import init_from_checkpoint

log = logging.getLogger(__name__)


class SSLModule(StageModule):
    """Model: ``{"encoder", "head", "targets"}``; the encoder's weights later initialise the
    speech LLM's ``encoder.`` by name."""

    def build_model(self) -> nn.Module:
        stage = self.stage
        encoder = instantiate(self.model_cfg.encoder)
        self.mask_cfg = MaskConfig(**stage.mask)
        if stage.get("kmeans"):
            targets, classes = self._kmeans_targets(), stage.kmeans.num_clusters
        else:
            targets = RandomProjectionQuantizer(
                input_dim=self.model_cfg.encoder.input_dim,
                stack=encoder.subsampling,
                output_lengths=encoder.output_lengths,
                **stage.quantizer,
            )
            classes = stage.quantizer.codebook_size
        head = SSLHead(encoder.d_model, classes, stage.quantizer.get("num_codebooks", 1))
        return nn.ModuleDict({"encoder": encoder, "head": head, "targets": targets})

    def _kmeans_targets(self) -> KMeansTarget:
        """Round-2 targets: the previous encoder (frozen) + k-means fitted on its ``layer`` output."""
        stage = self.stage
        km = stage.kmeans
        previous = instantiate(self.model_cfg.encoder)
        holder = nn.ModuleDict({"encoder": previous})
        init_from_checkpoint(holder, km.encoder_from, ["^encoder\\."], checkpoint=stage.init_checkpoint)
        tokenizer = KMeansTokenizer(km.num_clusters, previous.d_model)
        if self.trainer.is_global_zero:
            dm = self.trainer.datamodule
            batches = (dm.on_after_batch_transfer(b, 0) for b in dm.val_dataloader())
            feats = collect_features(previous, batches, km.layer, km.max_frames)
            gen = torch.Generator().manual_seed(int(self.seed))
            result = fit_kmeans(feats, km.num_clusters, max_iters=km.max_iters, generator=gen)
            tokenizer.set_centroids(result.centroids)
            log.info(
                "k-means: %d clusters on %d frames, inertia %.4g",
                km.num_clusters,
                len(feats),
                result.inertia[-1],
            )
        tokenizer.set_centroids(self.trainer.strategy.broadcast(tokenizer.centroids, src=0))
        return KMeansTarget(previous, tokenizer, km.layer)

    def _step(self, batch: dict, split: str) -> torch.Tensor:
        gen = None
        if split == "val":  # the same masks every validation run
            gen = torch.Generator(device=batch["feats"].device).manual_seed(int(self.seed))
        m = self.model
        out = ssl_step(m["encoder"], m["head"], m["targets"], batch, self.mask_cfg, gen)
        n = len(batch["feat_lens"])
        sync = split == "val"
        self.log(f"{split}/loss", out["loss"], prog_bar=True, batch_size=n, sync_dist=sync)
        self.log(f"{split}/acc", out["acc"], batch_size=n, sync_dist=sync)
        self.log(f"{split}/mask_frac", out["mask_frac"], batch_size=n, sync_dist=sync)
        return out["loss"]

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "val")
