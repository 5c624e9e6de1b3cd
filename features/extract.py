"""Layer-wise feature extraction: one forward pass per image, every requested layer hooked.

:func:`extract` hooks the requested layers and hands each batch's pooled features to a sink. A
layer is a named layer of ``model.named_layers()`` (``encoder``, ``last_conv``,
``projector_raw``, ...; the names and their pooling are listed in :mod:`nc_control.layers`) or the
dotted path of any module (``encoder.layer4.1.conv2``), one mechanism for both
(:func:`resolve_layers`); every output is pooled to one vector per image by
:func:`nc_control.layers.pool_output` (conv map: global average pool; token map: mean of the
patch tokens; a vector as it is).

Batches stream to a sink (:class:`MemorySink` in memory, :class:`features.entry.MemmapSink` into
the ``.npy`` files of a cache entry), so a dataset's features never need to sit in memory at once.
"""
from __future__ import annotations

import difflib
from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from core.distributed import pick_device
from core.errors import UserError
from core.progress import progress
from nc_control.layers import num_prefix_tokens, pool_output

#: Arithmetic of the forward pass: ``float32`` (the official evaluation's) or ``bfloat16`` autocast.
PRECISIONS = ("float32", "bfloat16")


def _as_layer_list(layers: str | Sequence[str]) -> list[str]:
    names = [layers] if isinstance(layers, str) else list(layers)
    if not names:
        raise ValueError("no layers requested; pass at least one name from model.named_layers()")
    return list(OrderedDict.fromkeys(names))


def module_paths(model: nn.Module) -> dict[int, str]:
    """``id(module) -> dotted path`` in ``model.named_modules()`` (the first path of a shared module)."""
    paths: dict[int, str] = {}
    for path, module in model.named_modules():
        paths.setdefault(id(module), path)
    return paths


def resolve_layers(model: nn.Module, layers: str | Sequence[str]) -> OrderedDict[str, nn.Module]:
    """The modules to hook for ``layers``, in the requested order.

    A name is either a named layer of ``model.named_layers()`` (``encoder``, ``last_conv``,
    ``projector``, ...; these win) or the dotted path of any module in ``model.named_modules()``
    (``encoder.layer4.1.conv2``); either way the module's output is pooled by :func:`pool_output`.
    An unknown name is a UserError listing the named layers and the closest module paths."""
    named = model.named_layers()
    modules = dict(model.named_modules())
    names = _as_layer_list(layers)
    resolved: OrderedDict[str, nn.Module] = OrderedDict()
    for name in names:
        module = named.get(name, modules.get(name) if name else None)
        if module is None:
            close = difflib.get_close_matches(name, [*named, *[p for p in modules if p]], n=3, cutoff=0.6)
            hint = f" (did you mean {' or '.join(close)}?)" if close else ""
            raise UserError(f"unknown layer {name!r}{hint}; named layers: {', '.join(named)}; or the dotted "
                            f"path of any module of the model, e.g. {_example_path(model, named)}")
        resolved[name] = module
    return resolved


def _example_path(model: nn.Module, named: dict) -> str:
    paths = module_paths(model)
    module = named.get("last_conv", next(iter(named.values()), None))
    return paths.get(id(module), "encoder")


def describe_layers(model: nn.Module, layers: str | Sequence[str]) -> dict[str, str]:
    """``layer name -> the dotted module path it hooks`` (``last_conv -> encoder.layer4.1.conv2``)."""
    paths = module_paths(model)
    return {name: paths.get(id(module), name) for name, module in resolve_layers(model, layers).items()}


class MemorySink:
    """Collects the batches in memory; after :meth:`close`, ``features[layer]`` is an N x D tensor
    and ``labels`` an N LongTensor. For small datasets and tests."""

    def __init__(self) -> None:
        self._parts: dict[str, list[torch.Tensor]] = {}
        self._labels: list[torch.Tensor] = []
        self.features: dict[str, torch.Tensor] = {}
        self.labels = torch.empty(0, dtype=torch.long)

    def write(self, start: int, features: dict[str, torch.Tensor], labels: torch.Tensor) -> None:
        for name, value in features.items():
            self._parts.setdefault(name, []).append(value)
        self._labels.append(labels)

    def close(self, num_samples: int) -> None:
        self.features = {name: torch.cat(parts) for name, parts in self._parts.items()}
        self.labels = torch.cat(self._labels) if self._labels else torch.empty(0, dtype=torch.long)


def resolve_device(device: str | torch.device) -> torch.device:
    """``'auto'``: CUDA when present, else CPU; anything else as ``torch.device`` reads it."""
    return pick_device(device) if isinstance(device, str) else torch.device(device)


def _batches(loader_or_dataset: DataLoader | Dataset, batch_size: int, num_workers: int,
             device: torch.device) -> DataLoader:
    if isinstance(loader_or_dataset, DataLoader):
        return loader_or_dataset
    return DataLoader(loader_or_dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      pin_memory=device.type == "cuda")


def extract(model: nn.Module, loader_or_dataset: DataLoader | Dataset, layers: str | Sequence[str], *,
            device: str | torch.device = "auto", batch_size: int = 256, num_workers: int = 0,
            show_progress: bool = True, sink=None, float16: bool = False, precision: str = "float32"):
    """Run ``model`` once over every image and hand each batch's pooled features of ``layers``
    (named layers or dotted module paths, see :func:`resolve_layers`) to ``sink`` (default: a
    :class:`MemorySink`), which is returned.

    A sink has ``write(start, features: dict[layer -> B x D CPU tensor], labels: B LongTensor)``,
    called in sample order, and ``close(num_samples)``. The model runs in eval mode under
    ``torch.inference_mode`` and is moved to ``device``. ``precision='float32'`` (the default, as the
    official evaluation) runs the forward pass in float32 on every device; ``'bfloat16'`` runs it
    under bf16 autocast (faster on GPUs, but bf16's 8-bit mantissa puts a floor under the
    within-class spread, hence under NC1, of collapsed features). Features are pooled in float32
    and handed over as float32 (float16 when ``float16``). A dataset is read in
    order with ``batch_size``/``num_workers``; a DataLoader is used as given. The hooks are removed
    and the model's train/eval mode restored even when the loop fails.
    """
    device = resolve_device(device)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    modules = resolve_layers(model, layers)
    prefix = num_prefix_tokens(model)
    out_dtype = torch.float16 if float16 else torch.float32
    sink = MemorySink() if sink is None else sink
    loader = _batches(loader_or_dataset, batch_size, num_workers, device)

    captured: dict[str, torch.Tensor] = {}

    def hook_for(name: str):
        def hook(_module, _inputs, output):
            if name in captured:
                raise UserError(f"layer {name!r} runs more than once per forward pass (a module called at several "
                                f"places); hook a module that runs once, e.g. its parent")
            captured[name] = pool_output(output, prefix).to(out_dtype)
        return hook

    was_training = model.training
    model.to(device).eval()
    handles = [module.register_forward_hook(hook_for(name)) for name, module in modules.items()]
    seen = 0
    try:
        bar = progress(total=len(loader.dataset), show=show_progress, unit="img", desc="features", leave=False)
        with bar, torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16,
                                                         enabled=precision == "bfloat16"):
            for images, targets in loader:
                images = images.to(device, non_blocking=True)
                if device.type == "cuda" and images.dim() == 4:
                    images = images.contiguous(memory_format=torch.channels_last)
                captured.clear()
                model(images)
                missing = [n for n in modules if n not in captured]
                if missing:
                    raise RuntimeError(f"layer(s) {', '.join(missing)} did not run in the model's forward pass")
                labels = torch.as_tensor(targets).long().reshape(-1).cpu()
                sink.write(seen, {n: captured[n].cpu() for n in modules}, labels)
                seen += len(labels)
                bar.update(len(labels))
        sink.close(seen)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return sink
