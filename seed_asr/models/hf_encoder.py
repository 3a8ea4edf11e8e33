"""A pretrained Hugging Face Whisper encoder behind the ConformerEncoder interface."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import AutoModel

from seed_asr.models.encoder import EncoderOutput, check_feats, padding_mask


class HFEncoder(nn.Module):
    """The encoder of a local Whisper checkpoint, fed our (B, T, n_mels) fbank.

    Whisper always sees 30 s: the batch is zero-padded (in feature space) to
    2 * max_source_positions frames, and the outputs are cut back to the valid frames. Whisper was
    trained on its own log-mel scaling, so features should be computed the same way for its weights to
    be useful (our CMVN-normalised fbank is a different input distribution).

    Args:
        path: local folder of a model saved with `save_pretrained` (no download is attempted).
        activation_checkpointing: enable Hugging Face gradient checkpointing of the layers.
    """

    subsampling = 2
    min_input_frames = 1

    def __init__(self, path: str, activation_checkpointing: bool = False) -> None:
        super().__init__()
        if not Path(path).is_dir():
            raise FileNotFoundError(f"HFEncoder path {path!r} is not a local model folder")
        model = AutoModel.from_pretrained(path, local_files_only=True)
        if model.config.model_type != "whisper":
            raise ValueError(
                f"HFEncoder supports Whisper checkpoints, {path!r} is {model.config.model_type!r}"
            )
        self.model = model.get_encoder()
        if activation_checkpointing:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.input_dim = model.config.num_mel_bins
        self.d_model = model.config.d_model
        self.input_frames = 2 * model.config.max_source_positions

    @staticmethod
    def output_lengths(feat_lens: torch.Tensor) -> torch.Tensor:
        """Valid output frames after Whisper's stride-2 convolution: (L - 1) // 2 + 1."""
        return (feat_lens - 1) // 2 + 1

    def forward(
        self, feats: torch.Tensor, feat_lens: torch.Tensor, output_hidden_states: bool = False
    ) -> EncoderOutput:
        """(B, T, n_mels) with T <= 2 * max_source_positions -> EncoderOutput (B, T', D)."""
        check_feats(feats, feat_lens, self.input_dim, self.min_input_frames)
        if feats.shape[1] > self.input_frames:
            raise ValueError(f"feats has {feats.shape[1]} frames, Whisper takes at most {self.input_frames}")
        feats = feats.masked_fill(~padding_mask(feat_lens, feats.shape[1])[..., None], 0.0)
        feats = nn.functional.pad(feats, (0, 0, 0, self.input_frames - feats.shape[1]))
        out = self.model(input_features=feats.transpose(1, 2), output_hidden_states=output_hidden_states)
        lens = self.output_lengths(feat_lens)
        t = int(lens.max())
        states = None
        if output_hidden_states:
            # hidden_states = (embeddings, block 1, ..., block N); the final LayerNorm is applied only to
            # last_hidden_state, which replaces the last block's output to match `hidden`.
            states = tuple(h[:, :t] for h in out.hidden_states[1:-1]) + (out.last_hidden_state[:, :t],)
        return EncoderOutput(out.last_hidden_state[:, :t], lens, states)
