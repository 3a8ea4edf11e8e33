#!/usr/bin/env bash
# The job step of the sbatch templates (train_single_node.sbatch, train_multi_node.sbatch): one task per
# device; Lightning reads ranks and the rendezvous address from the SLURM environment (conf/cluster/slurm.yaml).
# Settings come from the environment (sbatch passes the submitter's environment by default):
#   STAGE        stage to train: lm, align, sft, ...                       (required)
#   EXPERIMENT   an experiment config, conf/experiment/<name>.yaml         (default: none)
#   TRAINER      trainer config: gpu, or cpu on CPU-only nodes             (default: gpu)
#   OUTPUT_ROOT  where run folders go                                      (default: outputs)
#   PYTHON       the interpreter of the environment with seed-asr          (default: python)
# Extra arguments are Hydra overrides, passed on unchanged.
set -euo pipefail
: "${STAGE:?set STAGE, e.g. sbatch --export=ALL,STAGE=sft slurm/train_single_node.sbatch}"
# keyed by the job id: a requeued job (same id) finds its own checkpoints/last.ckpt
run_dir="${OUTPUT_ROOT:-outputs}/${STAGE}/slurm-${SLURM_JOB_ID}"
echo "job ${SLURM_JOB_ID} restart ${SLURM_RESTART_COUNT:-0} on ${SLURM_JOB_NODELIST}: ${run_dir}"
exec srun --kill-on-bad-exit=1 "${PYTHON:-python}" -m seed_asr.train \
  stage="${STAGE}" ${EXPERIMENT:+experiment="${EXPERIMENT}"} \
  cluster=slurm trainer="${TRAINER:-gpu}" \
  trainer.num_nodes="${SLURM_JOB_NUM_NODES}" trainer.devices="${SLURM_NTASKS_PER_NODE}" \
  hydra.run.dir="${run_dir}" "$@"
