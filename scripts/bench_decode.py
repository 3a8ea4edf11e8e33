"""Throughput of seed_asr's batched greedy / beam search against Hugging Face `generate`, same inputs.

A random tiny Qwen2 (hidden 256, 4 layers, vocab 1000) continues random left-padded embedding
prefixes of 60-100 positions; the eos logit row is scaled so hypotheses end at varied lengths, as
transcripts do. Each decoder runs `--repeats` times; the table gives median utterances/s and the
speed-up over `generate`, after checking that both return the same tokens.

    PYTHONPATH=. python scripts/bench_decode.py --batch 24 --repeats 5   # one torch thread by default
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from seed_asr.decoding import beam_search, greedy_decode

EOS = 3


def build(args: argparse.Namespace) -> tuple[Qwen2ForCausalLM, torch.Tensor, torch.Tensor]:
    torch.manual_seed(args.seed)
    config = Qwen2Config(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=4 * args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    llm = Qwen2ForCausalLM(config).eval()
    with torch.no_grad():
        llm.lm_head.weight[EOS] *= args.eos_boost
    lengths = torch.randint(60, 101, (args.batch,))
    embeds = torch.randn(args.batch, int(lengths.max()), args.hidden)
    mask = (torch.arange(embeds.shape[1]) >= embeds.shape[1] - lengths[:, None]).long()
    return llm, embeds, mask


def cut(row: list[int]) -> list[int]:
    return row[: row.index(EOS)] if EOS in row else row


def timed(fn: Callable[[], list[list[int]]], repeats: int) -> tuple[float, list[list[int]]]:
    """Median seconds of `repeats` calls after one warm-up call, and the last output."""
    out = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()  # returns Python lists, so the device has finished
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=24)
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=1000)
    parser.add_argument("--eos-boost", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: leave as is)")
    parser.add_argument("--device", default="cpu", help="torch device of the model and prefixes")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    llm, embeds, mask = build(args)
    llm, embeds, mask = llm.to(args.device), embeds.to(args.device), mask.to(args.device)
    common = {"inputs_embeds": embeds, "attention_mask": mask, "eos_token_id": EOS, "pad_token_id": EOS}
    common["max_new_tokens"] = args.max_new_tokens
    k = args.beam

    @torch.no_grad()
    def hf_greedy() -> list[list[int]]:
        return [cut(r) for r in llm.generate(**common, do_sample=False, num_beams=1).tolist()]

    @torch.no_grad()
    def hf_beam() -> list[list[int]]:
        out = llm.generate(**common, do_sample=False, num_beams=k, num_return_sequences=k)
        return [cut(r) for r in out.tolist()]

    def our_greedy() -> list[list[int]]:
        return greedy_decode(llm, embeds, mask, EOS, args.max_new_tokens).tokens

    def our_beam() -> list[list[int]]:
        nbest = beam_search(llm, embeds, mask, EOS, max_new_tokens=args.max_new_tokens, beam_size=k, nbest=k)
        return [h.tokens for hyps in nbest for h in hyps]

    rows = []
    decoders = (("greedy", our_greedy, hf_greedy), (f"beam {k} (n-best {k})", our_beam, hf_beam))
    for name, ours, reference in decoders:
        ref_time, ref_out = timed(reference, args.repeats)
        our_time, our_out = timed(ours, args.repeats)
        equal = our_out == ref_out
        rows.append((name, args.batch / ref_time, args.batch / our_time, ref_time / our_time, equal))
    lengths = [len(t) for t in our_greedy()]
    print(
        f"batch {args.batch}, prefix 60-100, max_new_tokens {args.max_new_tokens}, greedy lengths "
        f"{min(lengths)}-{max(lengths)} (median {statistics.median(lengths)}), torch threads "
        f"{torch.get_num_threads()}, device {args.device}, median of {args.repeats} after a warm-up"
    )
    print(f"{'decoder':<22}{'HF generate utt/s':>19}{'seed_asr utt/s':>16}{'speed-up':>10}{'equal':>7}")
    for name, ref_rate, our_rate, speedup, equal in rows:
        print(f"{name:<22}{ref_rate:>19.1f}{our_rate:>16.1f}{speedup:>9.2f}x{str(equal):>7}")


if __name__ == "__main__":
    main()
