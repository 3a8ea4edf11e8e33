"""Fbank parity with kaldi-native-fbank, SpecAugment bounds, CMVN maths and file round trip."""

import kaldi_native_fbank as knf
import numpy as np
import pytest
import torch

from seed_asr.data.cmvn import compute_cmvn, load_cmvn, save_cmvn
from seed_asr.data.features import Fbank, GlobalCMVN, SpecAugment, frame_lengths
from seed_asr.testing.synthetic import synthetic_wave


def kaldi_reference(wave: np.ndarray) -> np.ndarray:
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.mel_opts.num_bins = 80
    fbank = knf.OnlineFbank(opts)
    fbank.accept_waveform(16000, wave.tolist())
    fbank.input_finished()
    return np.stack([fbank.get_frame(i) for i in range(fbank.num_frames_ready)])


def test_fbank_matches_kaldi_native_fbank_on_a_padded_batch():
    rng = np.random.default_rng(0)
    waves = [synthetic_wave(rng, seconds) for seconds in (1.3, 0.7, 2.05)]
    waves[1][:3000] = 0.0  # digital silence exercises the log floor
    lens = torch.tensor([w.shape[0] for w in waves])
    audio = torch.zeros(len(waves), int(lens.max()))
    for row, wave in enumerate(waves):
        audio[row, : wave.shape[0]] = torch.from_numpy(wave)
    feats, feat_lens = Fbank()(audio, lens)
    assert feats.shape == (3, int(feat_lens.max()), 80)
    for row, wave in enumerate(waves):
        ref = kaldi_reference(wave)
        assert int(feat_lens[row]) == ref.shape[0]
        # log-mel values span about -16..10; float32 FFT differences stay far below 1e-2
        np.testing.assert_allclose(feats[row, : ref.shape[0]].numpy(), ref, atol=1e-2, rtol=0)
        assert torch.all(feats[row, ref.shape[0] :] == 0)


def test_frame_lengths_follow_snip_edges():
    lens = torch.tensor([0, 399, 400, 559, 560, 16000])
    assert frame_lengths(lens).tolist() == [0, 0, 1, 1, 2, 1 + (16000 - 400) // 160]


def test_spec_augment_masks_stay_inside_lengths_and_widths():
    torch.manual_seed(0)
    lens = torch.tensor([100, 37, 0, 64])
    feats = torch.ones(4, 100, 80)
    time_only = SpecAugment(freq_masks=0, time_masks=3, time_width=20, time_width_ratio=0.5)(feats, lens)
    for row, length in enumerate(lens.tolist()):
        masked = (time_only[row] == 0).all(dim=1)
        assert not masked[length:].any()
        assert masked.sum() <= 3 * min(20, int(length * 0.5))
    assert (time_only == 0).any()
    freq_only = SpecAugment(freq_masks=2, freq_width=10, time_masks=0)(feats, lens)
    columns = (freq_only == 0).all(dim=1)  # a frequency mask covers every frame of the utterance
    assert torch.equal((freq_only == 0).any(dim=1), columns)
    assert (columns.sum(dim=1) <= 20).all() and columns.any()


def test_global_cmvn_normalises_and_keeps_padding_zero():
    mean, std = torch.tensor([1.0, -2.0]), torch.tensor([2.0, 0.5])
    feats = torch.tensor([[[3.0, -1.0], [1.0, -2.0]], [[5.0, 0.0], [7.0, 7.0]]])
    out = GlobalCMVN(mean, std)(feats, torch.tensor([2, 1]))
    expected = torch.tensor([[[1.0, 2.0], [0.0, 0.0]], [[2.0, 4.0], [0.0, 0.0]]])
    torch.testing.assert_close(out, expected)
    with pytest.raises(ValueError, match="positive"):
        GlobalCMVN(mean, torch.tensor([1.0, 0.0]))


def test_cmvn_matches_numpy_over_all_frames_and_round_trips(tmp_path):
    rng = np.random.default_rng(1)
    waves = [synthetic_wave(rng, s) for s in (0.5, 0.9, 0.3)]
    fbank = Fbank()
    stats = compute_cmvn(iter(waves), fbank, max_utterances=2)
    frames = np.concatenate([kaldi_reference(w) for w in waves[:2]])
    assert stats.utterances == 2 and stats.frames == frames.shape[0]
    np.testing.assert_allclose(stats.mean.numpy(), frames.mean(0), atol=1e-2)
    np.testing.assert_allclose(stats.std.numpy(), frames.std(0), atol=1e-2)
    loaded = load_cmvn(save_cmvn(stats, tmp_path / "run" / "cmvn.json"))
    torch.testing.assert_close(loaded.mean, stats.mean)
    torch.testing.assert_close(loaded.std, stats.std)
    (tmp_path / "bad.json").write_text('{"mean": [1.0]}')
    with pytest.raises(ValueError, match="bad.json"):
        load_cmvn(tmp_path / "bad.json")
