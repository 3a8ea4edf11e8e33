"""``seed-asr train stage=<stage> [overrides]``: one training stage as a Hydra-composed Lightning run."""

from __future__ import annotations

import contextlib
import logging
import signal
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.utils import get_class, instantiate
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, open_dict

from seed_asr.lit.stage_module import StageModule
from seed_asr.lit.tokenizers import resolve_tokenizer
from seed_asr.utils.checkpoints import resume_checkpoint, run_checkpoint
from seed_asr.utils.precision import auto_precision
from seed_asr.utils.run_folder import hold_run_folder
from seed_asr.utils.run_info import environment_info, keep_wandb_files_in, save_run_files

log = logging.getLogger(__name__)

def _instantiate_dict(cfg: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a name -> config mapping that has a ``_target_`` (None entries skipped)."""
    if not cfg:
        return []
    return [instantiate(c) for c in cfg.values() if c is not None and "_target_" in c]


def resolve_ckpt_path(ckpt_path: str | None, output_dir: str | Path) -> str | None:
    """``"last"`` means the run folder's checkpoint to resume (`seed_asr.utils.checkpoints.resume_checkpoint`:
    ``checkpoints/last.ckpt``, else the newest readable one, else None: a fresh start); others as given."""
    if ckpt_path != "last":
        return ckpt_path
    found = resume_checkpoint(output_dir)
    return None if found is None else str(found)


def build_module(cfg: DictConfig) -> StageModule:
    """The stage's LightningModule (``stage.module``), given what it needs rather than the whole config:
    the stage's options, the model config, the seed, the decoding settings, the tokenizer (resolved
    here when the module uses one) and the resolved run config (the checkpoints' record)."""
    options = dict(cfg.stage.module)
    module_class = get_class(options.pop("_target_"))
    tokenizer = None
    if module_class.uses_tokenizer:
        tokenizer = resolve_tokenizer(cfg.stage, cfg.model.tokenizer, cfg.data.train_shards)
    return module_class(
        stage=cfg.stage, model=cfg.model, seed=cfg.seed, decoding=cfg.get("decoding"), tokenizer=tokenizer,
        run_config=OmegaConf.to_container(cfg, resolve=True), **options,
    )


def count_validation_steps_across_epochs(trainer_cfg: DictConfig) -> None:
    """An integer ``val_check_interval`` validates every that many training batches of the whole run:
    ``check_val_every_n_epoch`` is set to None in ``trainer_cfg`` (logged). Lightning would otherwise count
    the batches within each epoch and refuse an interval longer than an epoch, whose length (streamed
    batches or transcripts of the text stage) the interval's author need not know."""
    interval = trainer_cfg.get("val_check_interval")
    if isinstance(interval, int) and trainer_cfg.get("check_val_every_n_epoch") is not None:
        log.info("val_check_interval %d: validating every %d training batches of the run", interval, interval)
        with open_dict(trainer_cfg):
            trainer_cfg.check_val_every_n_epoch = None


def build(cfg: DictConfig) -> dict[str, Any]:
    """Instantiate the data module, the LightningModule, loggers, callbacks and the trainer.

    ``trainer.precision: auto`` is first replaced in ``cfg`` by the choice of
    `seed_asr.utils.precision.auto_precision` (logged), and an integer ``trainer.val_check_interval`` made to
    count across epochs (`count_validation_steps_across_epochs`), so the saved config records both.
    """
    if cfg.trainer.get("precision") == "auto":
        precision, reason = auto_precision(cfg.trainer.get("accelerator", "auto"))
        log.info("precision auto -> %s: %s", precision, reason)
        with open_dict(cfg):
            cfg.trainer.precision = precision
    count_validation_steps_across_epochs(cfg.trainer)
    datamodule = instantiate(cfg.data)
    module = build_module(cfg)
    callbacks = _instantiate_dict(cfg.get("callbacks"))
    loggers = _instantiate_dict(cfg.get("logger"))
    strategy = instantiate(cfg.strategy) if cfg.get("strategy") and "_target_" in cfg.strategy else "auto"
    trainer = instantiate(cfg.trainer, strategy=strategy, callbacks=callbacks, logger=loggers or False)
    return {"datamodule": datamodule, "module": module, "trainer": trainer, "loggers": loggers}


def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Run ``fit`` (and ``test`` when ``cfg.test`` is true) for one stage, holding its run folder.

    Returns:
        (metrics, objects): the trainer's final metrics as floats, and the built objects.

    Raises:
        RunFolderInUse: another live run holds ``cfg.paths.output_dir``.
    """
    L.seed_everything(cfg.seed, workers=True)
    keep_wandb_files_in(cfg.paths.output_dir)
    objects = build(cfg)
    trainer: L.Trainer = objects["trainer"]
    # rank zero holds the run folder until the run ends: a second run in it fails here, before writing
    owner = hold_run_folder(cfg.paths.output_dir) if trainer.global_rank == 0 else contextlib.nullcontext()
    with owner:
        ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), cfg.paths.output_dir)
        info = environment_info(trainer.world_size)
        save_run_files(cfg, cfg.paths.output_dir, info, resumed_from=ckpt_path)
        for logger in objects["loggers"]:  # the config, git commit, versions, world size and GPUs
            logger.log_hyperparams({**OmegaConf.to_container(cfg, resolve=True), "run_info": info})
        try:
            trainer.fit(objects["module"], datamodule=objects["datamodule"], ckpt_path=ckpt_path)
        except SIGTERMException:
            if trainer.received_sigterm:  # not a finished run (Lightning would exit 0): 128 + SIGTERM
                raise SystemExit(128 + signal.SIGTERM) from None
            raise  # a stop a callback decided (SlurmRequeue: checkpointed and requeued)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        if cfg.get("test"):
            best = str(run_checkpoint(cfg.paths.output_dir, "best")) if cfg.get("test_best") else None
            trainer.test(objects["module"], datamodule=objects["datamodule"], ckpt_path=best)
            metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    return metrics, objects


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns the value of ``cfg.optimized_metric`` for sweepers."""
    metrics, _ = train(cfg)
    key = cfg.get("optimized_metric")
    if not key:
        return None
    if key not in metrics:
        raise KeyError(f"optimized_metric={key!r} was not logged by this run (logged: {sorted(metrics)})")
    return metrics[key]


if __name__ == "__main__":
    main()
