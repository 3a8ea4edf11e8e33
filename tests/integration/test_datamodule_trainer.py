"""ShardDataModule inside a Lightning Trainer: features on transfer, SpecAugment only in training,
CMVN computed into the run folder, skip counts reaching the logged metrics."""

import json

import lightning as L
import torch
import webdataset as wds

from seed_asr.callbacks.data_stats import DataStatsLogger
from seed_asr.data.cmvn import load_cmvn
from seed_asr.data.datamodule import ShardDataModule
from seed_asr.testing.synthetic import synthetic_record, write_synthetic_shards


class FeatureProbe(L.LightningModule):
    """Records whether whole feature columns are zero (a SpecAugment frequency mask) in each phase."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(80, 1)
        self.masked = {"train": [], "val": []}

    def _probe(self, batch, phase):
        feats, lens = batch["feats"], batch["feat_lens"]
        assert feats.shape[:2] == (len(batch["keys"]), int(lens.max()))
        columns = [(feats[i, : int(n)] == 0).all(dim=0).any().item() for i, n in enumerate(lens)]
        self.masked[phase].append(any(columns))
        return self.layer(feats).mean()

    def training_step(self, batch, batch_idx):
        return self._probe(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._probe(batch, "val")

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_trainer_gets_features_specaugment_in_training_only_and_skip_counts(tmp_path):
    train = write_synthetic_shards(tmp_path / "data" / "train", 2, 6, 0.5, 1.5, seed=0)
    dev = write_synthetic_shards(tmp_path / "data" / "dev", 1, 5, 0.5, 1.5, seed=1, prefix="dev")
    with wds.TarWriter(str(tmp_path / "data" / "dev" / "broken.tar")) as writer:
        writer.write(
            {"__key__": "broken", "flac": b"junk", "json": json.dumps(synthetic_record("x", 1)).encode()}
        )
    run = tmp_path / "run"
    dm = ShardDataModule(
        train_shards=[str(p) for p in train],
        val_shards=[str(dev[0]), str(tmp_path / "data" / "dev" / "broken.tar")],
        batches_per_epoch=2,
        max_batch_seconds=6.0,
        max_duration=3.0,
        bucket_buffer=4,
        freq_masks=2,
        freq_width=8,
        num_workers=0,
        output_dir=str(run),
        cmvn_utterances=6,
    )
    model = FeatureProbe()
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[DataStatsLogger()],
    )
    trainer.fit(model, datamodule=dm)
    assert len(model.masked["train"]) == 2 and all(model.masked["train"])
    assert model.masked["val"] and not any(model.masked["val"])
    assert load_cmvn(run / "cmvn.json").utterances == 6
    assert not list((tmp_path / "data").rglob("cmvn.json"))
    metrics = trainer.callback_metrics
    assert metrics["val/data_skipped_undecodable"].item() == 1.0
    assert metrics["val/data_skipped_too_long"].item() == 0.0
    assert 0.0 <= metrics["train/data_padding"].item() < 1.0
