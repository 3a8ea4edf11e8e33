"""`with_other_audio`, behind `val/loss_other_audio`: each utterance gets the next one's fbank; with
equal lengths the loss under it equals the true loss exactly when the audio path carries nothing."""

from __future__ import annotations

import pytest
import torch
from models_helpers import make_batch, tiny_speech_llm

from seed_asr.lit.validation import with_other_audio

TEXTS = ["call anneliese okonkwo", "play some music please", "今天天气很好"]

pytestmark = pytest.mark.usefixtures("one_thread")


def test_rolls_audio_and_keeps_transcripts() -> None:
    batch = make_batch(TEXTS, [40, 25, 33])
    other = with_other_audio(batch)
    assert other["texts"] == TEXTS and other["metas"] is batch["metas"]
    assert other["feat_lens"].tolist() == [33, 40, 25]
    for i, j in ((0, 2), (1, 0), (2, 1)):  # utterance i now has utterance j's audio, lengths with it
        assert torch.equal(other["feats"][i], batch["feats"][j])
    assert torch.equal(batch["feat_lens"], torch.tensor([40, 25, 33]))  # the input is untouched


def reorder(batch: dict, order: list[int]) -> dict:
    return {
        "feats": batch["feats"][order],
        "feat_lens": batch["feat_lens"][order],
        "texts": [batch["texts"][i] for i in order],
        "metas": [batch["metas"][i] for i in order],
    }


def test_loss_under_other_audio_tells_whether_the_model_listens() -> None:
    torch.manual_seed(0)
    model = tiny_speech_llm()
    batch = make_batch(TEXTS, [30, 30, 30])  # equal lengths: rolling changes the audio, not the positions
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(120):  # the pairs in a new order each step: only the audio tells which text is due
        order = torch.randperm(3, generator=torch.Generator().manual_seed(step)).tolist()
        loss = model(reorder(batch, order))
        optimizer.zero_grad()
        loss["loss"].backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        listening = model(batch)["ce_loss"], model(with_other_audio(batch))["ce_loss"]
        for p in model.converter.parameters():  # constant audio tokens: the model is deaf
            p.zero_()
        deaf = model(batch)["ce_loss"], model(with_other_audio(batch))["ce_loss"]
    assert listening[1] > listening[0] + 0.3, listening  # measured 0.05 vs 0.49
    torch.testing.assert_close(deaf[0], deaf[1])
