"""Trained models as files: saving and loading checkpoints, tokenizers, CMVN and quantized folders."""
