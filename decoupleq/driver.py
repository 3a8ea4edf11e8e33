"""Sequential, model-agnostic calibration: quantize a model block by block.

The first block's inputs are captured once; each block then has its selected linears hooked to
accumulate H (padding masked out), quantized group by group in a configured order (later groups
calibrate through float stand-ins holding the earlier groups' dequantized weights), replaced by
QuantLinear, optionally refined block-wise, and the calibration inputs are pushed through the
quantized block to become the next block's inputs. Only the current block is moved to `device`.
"""

from __future__ import annotations

import math
import re
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from decoupleq.baselines import rtn_quantize
from decoupleq.blockwise import BlockInput, RefineResult, refine_block, run_block
from decoupleq.config import QuantConfig
from decoupleq.hessian import input_gram
from decoupleq.nn import QuantLinear
from decoupleq.quantizer import QuantResult
from decoupleq.solver import LayerQuantizer, check_weight

# Block keyword arguments holding a KV cache: dropped so that re-running a block is side-effect free.
_CACHE_KWARGS = ("past_key_values", "past_key_value", "cache", "layer_past")


@dataclass
class LayerReport:
    """One quantized linear: its shape, relative output error, solve time, calibration tokens, stats."""

    name: str
    shape: tuple[int, int]
    error: float
    seconds: float
    tokens: int
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class QuantReport:
    """Outcome of `quantize_model`: per-layer reports, per-block refinement losses, total time."""

    config: QuantConfig
    layers: dict[str, LayerReport] = field(default_factory=dict)
    refinement: dict[int, RefineResult] = field(default_factory=dict)
    seconds: float = 0.0

    def mean_error(self) -> float:
        """Mean relative output error over the layers where it is defined (NaN when none is)."""
        defined = [r.error for r in self.layers.values() if not math.isnan(r.error)]
        return sum(defined) / len(defined) if defined else float("nan")

    def solver_seconds(self) -> float:
        """Seconds spent in the layer solvers (the rest of `seconds`: calibration passes, refinement)."""
        return sum(r.seconds for r in self.layers.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary."""
        return {"config": self.config.to_dict(), "seconds": self.seconds, "mean_error": self.mean_error(),
                "solver_seconds": self.solver_seconds(),
                "layers": {k: asdict(v) for k, v in self.layers.items()},
                "refinement": {str(k): asdict(v) for k, v in self.refinement.items()}}


class _StopForward(Exception):
    """Raised by the capture hook once the first block has received its inputs."""


def quantize_model(model: nn.Module, blocks: Sequence[nn.Module] | Callable[[], Sequence[nn.Module]],
                   calib_batches: Iterable[Any] | None, config: QuantConfig,
                   include: Sequence[str] | None = None, exclude: Sequence[str] | None = None,
                   order: Sequence[Sequence[str]] | None = None,
                   device: torch.device | str | None = None,
                   forward_fn: Callable[[nn.Module, Any], Any] | None = None,
                   backend: str = "auto",
                   on_block_outputs: Callable[[int, list[torch.Tensor]], None] | None = None) -> QuantReport:
    """Quantize the nn.Linear layers inside `blocks` in place, block by block.

    Args:
        model: The whole model; its forward must call `blocks[0]` first among the blocks.
        blocks: The sequential blocks (e.g. decoder layers), or a callable returning them.
        calib_batches: Model inputs: dicts (passed as keyword arguments) or tensors. A dict's
            "token_mask", else its 2-D "attention_mask" (B, T), marks the real tokens: padding does not
            enter H nor the refinement loss. Without one, a 2-D "attention_mask" in the block's kwargs
            is used. None: no calibration, for a config that needs none (plain ``rtn`` without
            block-wise refinement, `QuantConfig.needs_calibration`): each weight is rounded where it is,
            without a forward pass, and the layer errors are not measured (NaN).
        config: Quantization settings; every selected layer is checked against it before any work.
        include, exclude: Regexes searched in the linears' full names (default: every linear).
        order: Groups of name regexes quantized one after another within a block, e.g.
            [["q_proj", "k_proj", "v_proj"], ["o_proj"], ["up_proj", "gate_proj"], ["down_proj"]];
            later groups see inputs computed with the already-quantized earlier groups. Linears that
            match no group come last. Default: all linears of a block at once.
        device: Where each block is moved while it is quantized (default: where it is).
        forward_fn: `forward_fn(model, batch)` runs the model on a batch (default: `model(**batch)` for
            dicts, `model(batch)` otherwise).
        backend: QuantLinear forward backend.
        on_block_outputs: Called as ``on_block_outputs(b, outputs)`` once block b is quantized, with its
            hidden-state outputs on every calibration batch (what the next block receives): e.g. to
            calibrate a later part of the model from them without running this part again. Without
            it, the last block's outputs are not computed.

    Returns:
        QuantReport with per-layer errors and times.
    """
    start = time.perf_counter()
    as_list = isinstance(blocks, nn.Module) or not callable(blocks)  # an nn.ModuleList is callable too
    block_list = list(blocks if as_list else blocks())
    if not block_list:
        raise ValueError("quantize_model: no blocks given")
    names = {id(m): n for n, m in model.named_modules()}
    selected = [_select_linears(block, names.get(id(block), f"block{b}"), include, exclude)
                for b, block in enumerate(block_list)]
    for layers in selected:
        for name, linear in layers.items():
            config.check_layer(name, linear.in_features)
            try:
                check_weight(linear.weight.detach())
            except ValueError as err:
                raise ValueError(f"quantize_model: layer {name!r}: {err}; nothing was quantized") from err
    if not any(selected):
        raise ValueError("quantize_model: include/exclude select no nn.Linear inside the blocks")
    if calib_batches is None:
        config.check_data_free("quantize_model: calib_batches=None")
    report = QuantReport(config)
    was_training = model.training
    model.eval()
    undo = _Undo()
    try:
        with torch.no_grad():
            if calib_batches is None:
                for block, layers in zip(block_list, selected, strict=True):
                    undo.remember(block, layers)
                    _round_block(block, layers, config, backend, report, undo)
            else:
                inputs, masks = _capture_first_inputs(model, block_list[0], calib_batches, forward_fn, device)
                for b, (block, layers) in enumerate(zip(block_list, selected, strict=True)):
                    undo.remember(block, layers)
                    outputs_needed = on_block_outputs is not None or b + 1 < len(block_list)
                    inputs = _quantize_block(b, block, layers, inputs, masks, config, order, device, backend,
                                             report, undo, outputs_needed)
                    if on_block_outputs is not None:
                        on_block_outputs(b, [_hidden(item) for item in inputs])
    except BaseException:
        undo.restore()  # never leave a half-quantized model
        raise
    finally:
        model.train(was_training)
    report.seconds = time.perf_counter() - start
    return report


class _Undo:
    """What `quantize_model` changed, to put the model back as it was when it fails part-way: the
    replaced linears, and copies of the other parameters of each block it touched (refinement trains
    them)."""

    def __init__(self) -> None:
        self.replaced: list[tuple[nn.Module, str, nn.Linear]] = []
        self.saved: list[tuple[torch.Tensor, torch.Tensor]] = []

    def remember(self, block: nn.Module, layers: dict[str, nn.Linear]) -> None:
        """Copy the parameters of ``block`` outside its selected ``layers`` (those stay untouched)."""
        inside = {id(p) for linear in layers.values() for p in linear.parameters()}
        self.saved += [(p, p.detach().clone()) for p in block.parameters() if id(p) not in inside]

    def replace(self, parent: nn.Module, attr: str, new: nn.Module) -> None:
        """``parent.attr = new``, remembering the linear it replaces."""
        self.replaced.append((parent, attr, getattr(parent, attr)))
        setattr(parent, attr, new)

    def restore(self) -> None:
        with torch.no_grad():
            for parent, attr, linear in reversed(self.replaced):
                setattr(parent, attr, linear)
            for param, copy in self.saved:
                param.copy_(copy)


def _select_linears(block: nn.Module, prefix: str, include: Sequence[str] | None,
                    exclude: Sequence[str] | None) -> dict[str, nn.Linear]:
    out = {}
    for rel, module in block.named_modules():
        name = f"{prefix}.{rel}" if rel else prefix
        if not isinstance(module, nn.Linear):
            continue
        if include and not any(re.search(p, name) for p in include):
            continue
        if exclude and any(re.search(p, name) for p in exclude):
            continue
        out[name] = module
    return out


def _capture_first_inputs(model: nn.Module, first: nn.Module, calib_batches: Iterable[Any],
                          forward_fn: Callable[[nn.Module, Any], Any] | None,
                          device: torch.device | str | None
                          ) -> tuple[list[BlockInput], list[torch.Tensor | None]]:
    """Run the model on each batch until `first` is called; keep its (args, kwargs) and token mask."""
    inputs: list[BlockInput] = []
    masks: list[torch.Tensor | None] = []

    def hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        kwargs = {k: (None if k in _CACHE_KWARGS else v) for k, v in kwargs.items()}
        if "use_cache" in kwargs:
            kwargs["use_cache"] = False
        inputs.append((_to_device(args, device), _to_device(kwargs, device)))
        raise _StopForward

    handle = first.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for batch in calib_batches:
            try:
                if forward_fn is not None:
                    forward_fn(model, batch)
                elif isinstance(batch, dict):
                    model(**batch)
                else:
                    model(batch)
            except _StopForward:
                pass
            else:
                raise RuntimeError("quantize_model: the model's forward never called the first block")
            masks.append(_token_mask(batch, inputs[-1][1], device))
    finally:
        handle.remove()
    if not inputs:
        raise ValueError("quantize_model: calib_batches is empty")
    return inputs, masks


def _token_mask(batch: Any, kwargs: dict[str, Any], device: torch.device | str | None) -> torch.Tensor | None:
    """The (B, T) real-token mask of a batch, or None when neither the batch nor the block kwargs give one."""
    mask = None
    if isinstance(batch, dict):
        mask = batch.get("token_mask")
        if mask is None and isinstance(batch.get("attention_mask"), torch.Tensor) \
                and batch["attention_mask"].dim() == 2:
            mask = batch["attention_mask"]
    if mask is None and isinstance(kwargs.get("attention_mask"), torch.Tensor) \
            and kwargs["attention_mask"].dim() == 2:
        mask = kwargs["attention_mask"]
    return None if mask is None else _to_device(mask.bool(), device)


def _quantize_block(index: int, block: nn.Module, layers: dict[str, nn.Linear], inputs: list[BlockInput],
                    masks: list[torch.Tensor | None], config: QuantConfig,
                    order: Sequence[Sequence[str]] | None, device: torch.device | str | None,
                    backend: str, report: QuantReport, undo: _Undo, outputs_needed: bool) -> list[BlockInput]:
    """Quantize one block in place and return the next block's inputs (outputs of the quantized block;
    none when not `outputs_needed`)."""
    first_param = next(block.parameters(), None)
    home = None if first_param is None else first_param.device
    if device is not None:
        block.to(device)
    targets = [run_block(block, item) for item in inputs] if config.blockwise else []
    parents = _parents(block)
    packed: dict[str, QuantLinear] = {}
    for group in _ordered_groups(list(layers), order):
        quantizers = {name: LayerQuantizer(layers[name].weight, config, name) for name in group}
        grams = _SharedGrams()
        handles = [layers[name].register_forward_hook(_accumulate_hook(quantizers[name], grams))
                   for name in group]
        try:
            for item, mask in zip(inputs, masks, strict=True):
                grams.new_batch(mask)
                run_block(block, item)
        finally:
            for h in handles:
                h.remove()
        for name in group:
            linear = layers[name]
            result = quantizers[name].solve(linear.weight.detach())
            packed[name] = _packed(name, linear, result, quantizers[name].num_tokens, config, backend, report)
            undo.replace(*parents[id(linear)], _stand_in(linear, packed[name]))
    if config.blockwise:
        _install(packed, layers, parents)  # refinement trains the QuantLinears' scales and zeros
        report.refinement[index] = refine_block(block, inputs, targets, config, masks)
    next_inputs = [_replace_hidden(item, run_block(block, item)) for item in inputs] if outputs_needed else []
    _install(packed, layers, parents)
    if home is not None and device is not None:
        block.to(home)
    return next_inputs


def _round_block(block: nn.Module, layers: dict[str, nn.Linear], config: QuantConfig, backend: str,
                 report: QuantReport, undo: _Undo) -> None:
    """Data-free round-to-nearest of one block: each linear replaced by its QuantLinear, no forward pass."""
    parents = _parents(block)
    for name, linear in layers.items():
        result = rtn_quantize(linear.weight.detach(), None, config)
        undo.replace(*parents[id(linear)], _packed(name, linear, result, 0, config, backend, report))


def _packed(name: str, linear: nn.Linear, result: QuantResult, tokens: int, config: QuantConfig, backend: str,
            report: QuantReport) -> QuantLinear:
    """The QuantLinear of a solved layer, its outcome recorded in `report`."""
    report.layers[name] = LayerReport(name, tuple(linear.weight.shape), result.error,
                                      float(result.stats.get("seconds", 0.0)), tokens, result.stats)
    return QuantLinear.from_linear(linear, result.q, result.scale, result.zero, config, backend=backend)


def _parents(block: nn.Module) -> dict[int, tuple[nn.Module, str]]:
    """id(child module) -> (its parent, its attribute name) over `block`."""
    return {id(m): (parent, attr) for parent in block.modules() for attr, m in parent.named_children()}


def _stand_in(linear: nn.Linear, quantized: QuantLinear) -> nn.Linear:
    """A float linear computing what `quantized` computes (its dequantized weight, cast as its forward
    casts it, once): the block's later calibration passes run through it instead of unpacking codes."""
    stand_in = nn.Linear(linear.in_features, linear.out_features, linear.bias is not None,
                         device=linear.weight.device, dtype=linear.weight.dtype)
    with torch.no_grad():
        stand_in.weight.copy_(quantized.dequantized_weight())
        if linear.bias is not None:
            stand_in.bias.copy_(quantized.bias)
    return stand_in


def _install(packed: dict[str, QuantLinear], layers: dict[str, nn.Linear],
             parents: dict[int, tuple[nn.Module, str]]) -> None:
    """Put each QuantLinear where its float linear (or stand-in) was; `_Undo` still holds the original."""
    for name, quantized in packed.items():
        parent, attr = parents[id(layers[name])]
        setattr(parent, attr, quantized)


class _SharedGrams:
    """X^T X of the last linear input seen in a calibration batch: linears fed the same tensor one after
    another (q/k/v projections, gate/up projections) share one product instead of computing it each.
    Only the last is kept, so that at most one product is held beyond the accumulated H."""

    def __init__(self) -> None:
        self.mask: torch.Tensor | None = None
        self._last: tuple[weakref.ref, torch.Tensor, int] | None = None

    def new_batch(self, mask: torch.Tensor | None) -> None:
        """Forget the last batch's product; `mask` (...) marks the real tokens of the next batch."""
        self.mask, self._last = mask, None

    def of(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(X^T X, rows) of input `x` (..., K) under the batch's mask; reused while `x` is the last input."""
        if self._last is None or self._last[0]() is not x:  # a weak reference: never keeps x alive
            self._last = (weakref.ref(x), *input_gram(x, self.mask))
        return self._last[1], self._last[2]


def _accumulate_hook(quantizer: LayerQuantizer, grams: _SharedGrams
                     ) -> Callable[[nn.Module, tuple, Any], None]:
    def hook(_module: nn.Module, args: tuple, _output: Any) -> None:
        quantizer.add_gram(*grams.of(args[0]))
    return hook


def _ordered_groups(names: list[str], order: Sequence[Sequence[str]] | None) -> list[list[str]]:
    """Split layer names into the configured groups (first matching group wins; the rest last)."""
    if not order:
        return [names] if names else []
    groups: list[list[str]] = [[] for _ in order]
    rest = []
    for name in names:
        slot = next((i for i, pats in enumerate(order) if any(re.search(p, name) for p in pats)), None)
        (rest if slot is None else groups[slot]).append(name)
    return [g for g in [*groups, rest] if g]


def _hidden(item: BlockInput) -> torch.Tensor:
    """The hidden-state input of a block call (its first positional argument or 'hidden_states')."""
    args, kwargs = item
    return args[0] if args else kwargs["hidden_states"]


def _replace_hidden(item: BlockInput, hidden: torch.Tensor) -> BlockInput:
    args, kwargs = item
    if args:
        return (hidden, *args[1:]), kwargs
    if "hidden_states" in kwargs:
        return args, {**kwargs, "hidden_states": hidden}
    raise ValueError("quantize_model: the block got no positional input and no 'hidden_states' keyword")


def _to_device(obj: Any, device: torch.device | str | None) -> Any:
    if device is None:
        return obj
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, tuple):
        return tuple(_to_device(o, device) for o in obj)
    if isinstance(obj, list):
        return [_to_device(o, device) for o in obj]
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    return obj
