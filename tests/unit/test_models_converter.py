import pytest
import torch

from seed_asr.models.converter import Converter, splice_frames

pytestmark = pytest.mark.usefixtures("one_thread")


def test_splice_against_a_hand_built_case():
    # Sample 0 has 5 valid frames of a 5-frame batch, sample 1 has 2 (frames 2..4 are junk).
    x = torch.arange(2 * 5 * 2, dtype=torch.float32).view(2, 5, 2) + 1
    spliced, lens = splice_frames(x, torch.tensor([5, 2]), k=2)
    expected = torch.tensor(
        [
            [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 0, 0]],
            [[11, 12, 13, 14], [0, 0, 0, 0], [0, 0, 0, 0]],
        ],
        dtype=torch.float32,
    )
    assert torch.equal(spliced, expected)
    assert lens.tolist() == [3, 1]


def test_output_lengths_are_ceil_of_frames_over_k():
    conv = Converter(in_dim=4, out_dim=6, splice=3, hidden_dim=None)
    lens = torch.tensor([1, 2, 3, 4, 7, 9])
    out, out_lens = conv(torch.randn(6, 9, 4), lens)
    assert out.shape == (6, 3, 6)
    assert out_lens.tolist() == [1, 1, 1, 2, 3, 3] == conv.output_lengths(lens).tolist()


@pytest.mark.parametrize("hidden_dim", [None, 16])
def test_padding_does_not_change_a_samples_tokens(hidden_dim):
    torch.manual_seed(0)
    conv = Converter(in_dim=4, out_dim=8, splice=2, hidden_dim=hidden_dim)
    x, lens = torch.randn(2, 7, 4), torch.tensor([7, 3])
    out, out_lens = conv(x, lens)
    alone, alone_lens = conv(x[1:, :3], lens[1:])
    assert out_lens[1] == alone_lens[0] == 2
    torch.testing.assert_close(out[1, :2], alone[0])


def test_mlp_matches_a_plain_torch_reference():
    torch.manual_seed(0)
    conv = Converter(in_dim=3, out_dim=5, splice=2, hidden_dim=7)
    x = torch.randn(1, 4, 3)
    out, _ = conv(x, torch.tensor([4]))
    first, _, second = conv.proj
    ref = second(torch.nn.functional.gelu(first(x.reshape(1, 2, 6))))
    torch.testing.assert_close(out, ref)
    with pytest.raises(ValueError, match="splice"):
        Converter(in_dim=3, out_dim=5, splice=0)
