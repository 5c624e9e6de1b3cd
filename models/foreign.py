"""Models of other codebases as models of ours: one registry of state-dict layouts.

A layout is how another codebase names the tensors of a model we also build:

- ``resnet``: the ResNet-18/34 of the official NC-OOD code (BatchNorm baselines of
  ``resnet/resnet.py``; GroupNorm + weight standardization with the simplex-ETF projector of
  ``resnet_etf.py``) and torchvision's ``resnet18`` / ``resnet34``, which share one naming:
  ``conv1, bn1, layerX.Y.{conv1,bn1,conv2,bn2}, layerX.0.downsample.{0,1}, projection_head.{0,2}, fc``;
- ``vgg``: the official VGG17 (``vgg.py``, ``vgg_etf.py``): one flat ``features.N`` list (conv,
  norm, ReLU per conv layer, a max-pool ending each block), ``projection_head.{0,2}``, ``classifier``;
- ``vit``: the official ViT-T/S (``etf_vision_transformer.py``: no class token, a fixed 2-D
  sine-cosine position embedding that is a plain tensor and so absent from the state_dict) and
  timm's VisionTransformer: ``cls_token, pos_embed, patch_embed.proj, blocks.N.*, norm,
  projection_head.{0,2}, head``.

:func:`convert` takes what ``torch.load`` returned (a bare state_dict, or a dict holding it under
``state_dict`` (the official CNN scripts, timm's train script), ``model`` (the official ViT
script, DeiT-style) or ``model_state_dict``), drops wrapper segments from the names
(``module.`` of DataParallel/DistributedDataParallel, anywhere, as in ``features.module.0`` of
the official VGG script; ``_orig_mod.`` of ``torch.compile``), picks the layout from the names,
infers our build arguments from the tensors' shapes (``options`` override), builds our model and
maps every tensor onto it. The result is one of our models, so every named layer and module path
of ours works on it.

Inferred: the architecture (blocks per stage, conv layers, embedding width), ``norm`` (BatchNorm
running statistics present -> ``bn``, else ``gn_ws``: the official GroupNorm models always
standardize their convolutions), ``stem`` (7x7 or 3x3 first convolution), ``width``,
``in_chans``, the class count, the projector (its widths from its weights; ``etf`` when both
weights are the simplex-ETF matrices, else ``learnable``), VGG's convolution biases, and for ViTs
the patch size, class token, position embedding (learned when stored; its length gives the image
size) and pooling (the class token when there is one, as timm; else the patch-token mean).
Not stored in the official ViT files: the image size (``img_size``; default 224).

Every file tensor must land on one of ours with the same shape and every tensor of ours must come
from the file (except the fixed sine-cosine position embedding and BatchNorm's
``num_batches_tracked``); anything else is a ValueError naming the keys, in the file's names.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable

import torch

from models.registry import build_model
from models.vgg import VGG17_BLOCKS
from nc_control.etf import simplex_etf_matrix

FOREIGN_OPTIONS: dict = dict(arch=None, output_dim=None, hidden_mlp=None, projector=None, global_pool=None)
FOREIGN_TYPES = {"arch": str, "output_dim": int, "hidden_mlp": int, "projector": str, "global_pool": str}
FOREIGN_HELP = {
    "arch": "checkpoints of other codebases (NC-OOD, torchvision, timm): our architecture to host them "
            "(default: inferred from the tensors' shapes)",
    "output_dim": "checkpoints of other codebases: projector output width (default: from its weights; 0 = none)",
    "hidden_mlp": "checkpoints of other codebases: projector hidden width (default: from its weights; 0 = none)",
    "projector": "checkpoints of other codebases: etf or learnable (default: etf when the weights are the "
                 "simplex-ETF matrices)",
    "global_pool": "timm ViT checkpoints: token (the class token, timm's default) or avg (the patch-token mean)",
}
STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict")
WRAPPER_SEGMENTS = {"module", "_orig_mod"}
ETF_ATOL = 1e-6
DEFAULT_IMG_SIZE = 224


@dataclass(frozen=True)
class Layout:
    """``infer(state_dict, options) -> build_model kwargs``; ``their_key(our_key, kwargs)``: the name
    of our state_dict entry ``our_key`` in this layout; ``derived(our_key, kwargs)``: True for our
    entries the file need not hold (recomputed by our builder)."""
    name: str
    describes: str
    signature: tuple[str, ...]
    infer: Callable[[dict, dict], dict]
    their_key: Callable[[str, dict], str]
    derived: Callable[[str, dict], bool] = lambda key, kwargs: key.endswith(".num_batches_tracked")


LAYOUTS: dict[str, Layout] = {}


def register_layout(layout: Layout) -> Layout:
    if layout.name in LAYOUTS:
        raise ValueError(f"layout {layout.name!r} is registered twice")
    LAYOUTS[layout.name] = layout
    return layout


@dataclass
class Converted:
    """A foreign model as ours: ``build_model(**model_kwargs).load_state_dict(state_dict)``."""
    model_kwargs: dict
    state_dict: dict
    layout: str
    epoch: int | None

    def summary(self) -> str:
        """One line: the layout and the model of ours that hosts it."""
        kw = self.model_kwargs
        shown = (("img_size", "patch_size", "class_token", "pos_embed", "global_pool") if kw["arch"].startswith("vit")
                 else ("norm", "stem", "width", "conv_bias") if kw["arch"] == "vgg17" else ("norm", "stem", "width"))
        args = ", ".join(f"{k}={kw[k]}" for k in shown)
        return f"{LAYOUTS[self.layout].describes} as {kw['arch']}({args}), {kw['num_classes']} classes, {_projector_text(kw)}"


# --------------------------------------------------------------------------- the generic path

def find_state_dict(obj) -> dict[str, torch.Tensor]:
    """The state_dict inside what ``torch.load`` returned (see the module docstring)."""
    if _is_state_dict(obj):
        return dict(obj)
    if isinstance(obj, dict):
        for key in STATE_DICT_KEYS:
            if _is_state_dict(obj.get(key)):
                return dict(obj[key])
        keys = ", ".join(map(str, list(obj)[:8]))
        raise ValueError(f"holds no state_dict (top-level keys: {keys}); expected a state_dict or a dict "
                         f"holding one under {' / '.join(STATE_DICT_KEYS)}")
    raise ValueError(f"holds a {type(obj).__name__}, not a state_dict")


def _is_state_dict(obj) -> bool:
    return (isinstance(obj, dict) and len(obj) > 0
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()))


def strip_wrappers(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Names without the ``module`` / ``_orig_mod`` segments of training wrappers."""
    out = {}
    for key, value in state_dict.items():
        out[".".join(part for part in key.split(".") if part not in WRAPPER_SEGMENTS)] = value
    return out


def find_layout(state_dict: dict) -> Layout:
    for layout in LAYOUTS.values():
        if all(key in state_dict for key in layout.signature):
            return layout
    keys = list(state_dict)
    shown = ", ".join(keys[:6]) + (f", ... ({len(keys)} keys)" if len(keys) > 6 else "")
    known = "; ".join(layout.describes for layout in LAYOUTS.values())
    raise ValueError(f"has a layout we cannot map: keys not recognised: {shown}. Readable: nc-ood checkpoints "
                     f"and the state_dicts of {known}")


def convert(obj, **options) -> Converted:
    """``obj`` (what ``torch.load`` returned from a checkpoint of another codebase) as one of our
    models. ``options``: the keys of :data:`FOREIGN_OPTIONS` and ``img_size`` (None = infer)."""
    unknown = sorted(set(options) - set(FOREIGN_OPTIONS) - {"img_size"})
    if unknown:
        raise ValueError(f"unknown conversion option(s) {unknown}; valid: {sorted([*FOREIGN_OPTIONS, 'img_size'])}")
    opts = {**FOREIGN_OPTIONS, "img_size": None, **options}
    state_dict = strip_wrappers(find_state_dict(obj))
    layout = find_layout(state_dict)
    kwargs = layout.infer(state_dict, opts)
    if opts["projector"] is not None:
        kwargs["nc_control"]["projector"] = opts["projector"]
    model = build_model(**kwargs)
    ours = model.state_dict()
    theirs = {layout.their_key(key, kwargs): key for key in ours}

    unrecognised = [key for key in state_dict if key not in theirs]
    if unrecognised:
        raise ValueError(f"keys not recognised for {_model_text(kwargs)} ({layout.describes} layout): "
                         f"{_list(unrecognised)}{_projector_hint(unrecognised, kwargs)}")
    missing = [t for t, o in theirs.items() if t not in state_dict and not layout.derived(o, kwargs)]
    if missing:
        what = "projector key(s)" if all(theirs[t].startswith("projector.") for t in missing) else "key(s)"
        raise ValueError(f"missing {what} {_list(missing)} for {_model_text(kwargs)} ({layout.describes} layout)"
                         f"{_projector_hint(missing, kwargs)}")
    for their, our in theirs.items():
        if their in state_dict and tuple(state_dict[their].shape) != tuple(ours[our].shape):
            raise ValueError(f"shape mismatch: {their} is {tuple(state_dict[their].shape)} in the file but "
                             f"{tuple(ours[our].shape)} in {_model_text(kwargs)}; check --arch, --output_dim "
                             f"and --hidden_mlp")
    nc = kwargs["nc_control"]
    if nc["projector"] == "etf" and nc["output_dim"] and nc["hidden_mlp"]:
        for index in (0, 2):
            their = layout.their_key(f"projector.{index}.weight", kwargs)
            if not _is_etf(state_dict[their], nc["output_dim"]):
                raise ValueError(f"{their} is not the simplex-ETF matrix of width {nc['output_dim']}; "
                                 f"pass --projector learnable to host a trained projector")
    converted = {our: (state_dict[their] if their in state_dict else ours[our]).detach().clone()
                 for their, our in theirs.items()}
    epoch = obj.get("epoch") if isinstance(obj, dict) else None
    return Converted(dict(model.build_kwargs), converted, layout.name, int(epoch) if isinstance(epoch, int) else None)


def _list(keys: list[str], limit: int = 6) -> str:
    return ", ".join(keys[:limit]) + (f", ... ({len(keys)} keys)" if len(keys) > limit else "")


def _projector_text(kwargs: dict) -> str:
    nc = kwargs["nc_control"]
    if not (nc["output_dim"] and nc["hidden_mlp"]):
        return "no projector"
    return f"{nc['projector']} projector {nc['hidden_mlp']}->{nc['output_dim']}"


def _model_text(kwargs: dict) -> str:
    return f"{kwargs['arch']} with {_projector_text(kwargs)}"


def _projector_hint(keys: list[str], kwargs: dict) -> str:
    if not any("projection_head" in key or key.startswith("projector.") for key in keys):
        return ""
    return ("; the projector's widths come from --output_dim / --hidden_mlp or from its weights "
            "(leave them unset to infer, 0 for a model without projector)")


def _is_etf(weight: torch.Tensor, c: int) -> bool:
    expected = simplex_etf_matrix(weight.shape[0], weight.shape[1], c=c)
    return torch.allclose(weight.detach().cpu().double(), expected.double(), rtol=0.0, atol=ETF_ATOL)


def _count(state_dict: dict, pattern: str) -> int:
    regex = re.compile(pattern)
    return len({match.group(1) for key in state_dict if (match := regex.match(key))})


def _check_arch(layout: str, arch: str | None, inferred: str | None, valid: tuple[str, ...], found: str) -> str:
    chosen = arch or inferred
    if chosen is None:
        raise ValueError(f"{found}: no architecture of ours has this shape; ours for this layout: {', '.join(valid)}")
    if chosen not in valid:
        raise ValueError(f"--arch {chosen} cannot host a {layout} checkpoint; use one of {', '.join(valid)}")
    return chosen


def _reject(opts: dict, names: tuple[str, ...], layout: str) -> None:
    for name in names:
        if opts[name] is not None:
            raise ValueError(f"--{name} does not apply to a {layout} checkpoint; drop it")


def _projector_kwargs(state_dict: dict, prefix: str, opts: dict, embed_dim: int) -> dict:
    """NCConfig fields from ``prefix.{0,2}.weight`` (hidden x d, out x hidden) and the options."""
    first, second = state_dict.get(f"{prefix}.0.weight"), state_dict.get(f"{prefix}.2.weight")
    hidden = first.shape[0] if first is not None else (second.shape[1] if second is not None else 0)
    out = second.shape[0] if second is not None else (embed_dim if first is not None else 0)
    hidden = hidden if opts["hidden_mlp"] is None else opts["hidden_mlp"]
    out = out if opts["output_dim"] is None else opts["output_dim"]
    kind = "etf"
    if first is not None and second is not None and out >= 2 and first.dim() == 2 and second.dim() == 2:
        kind = "etf" if _is_etf(first, out) and _is_etf(second, out) else "learnable"
    return dict(output_dim=int(out), hidden_mlp=int(hidden), projector=kind)


def _classes(state_dict: dict, key: str) -> int:
    if key not in state_dict:
        raise ValueError(f"has no classifier ({key} is missing); a backbone without its classifier cannot be "
                         f"evaluated as a model here")
    return int(state_dict[key].shape[0])


def _their_projector_or_classifier(key: str, classifier: str) -> str | None:
    if key.startswith("projector."):
        return "projection_head." + key[len("projector."):]
    if key.startswith("classifier."):
        return classifier + "." + key[len("classifier."):]
    return None


# --------------------------------------------------------------------------- ResNet (NC-OOD, torchvision)

RESNET_BLOCKS = {(2, 2, 2, 2): "resnet18", (3, 4, 6, 3): "resnet34"}


def _infer_resnet(sd: dict, opts: dict) -> dict:
    _reject(opts, ("global_pool",), "ResNet")
    if any(".conv3." in key for key in sd):
        raise ValueError("holds a Bottleneck ResNet (ResNet-50 and deeper, keys like layer1.0.conv3.weight); "
                         "only the BasicBlock ResNet-18/34 are hosted here")
    blocks = tuple(_count(sd, rf"layer{i}\.(\d+)\.") for i in range(1, 5))
    arch = _check_arch("ResNet", opts["arch"], RESNET_BLOCKS.get(blocks), tuple(RESNET_BLOCKS.values()),
                       f"a ResNet with {blocks} blocks per stage")
    conv1 = sd["conv1.weight"]
    stems = {7: "imagenet", 3: "cifar"}
    if conv1.dim() != 4 or conv1.shape[-1] not in stems:
        raise ValueError(f"conv1.weight has shape {tuple(conv1.shape)}; hosted stems: a 7x7 (imagenet) or "
                         f"3x3 (cifar) first convolution")
    return dict(arch=arch, num_classes=_classes(sd, "fc.weight"),
                nc_control=_projector_kwargs(sd, "projection_head", opts, embed_dim=int(sd["fc.weight"].shape[1])),
                norm="bn" if "bn1.running_mean" in sd else "gn_ws", stem=stems[conv1.shape[-1]],
                width=conv1.shape[0] / 64, in_chans=int(conv1.shape[1]), img_size=opts["img_size"] or DEFAULT_IMG_SIZE)


_RESNET_NAMES = [(re.compile(r"^encoder\.stem\.0\."), "conv1."), (re.compile(r"^encoder\.stem\.1\."), "bn1."),
                 (re.compile(r"^encoder\.(layer\d\.\d+)\.norm(\d)\."), r"\1.bn\2."),
                 (re.compile(r"^encoder\.(layer\d\.\d+)\.shortcut\."), r"\1.downsample."),
                 (re.compile(r"^encoder\."), "")]


def _resnet_key(key: str, kwargs: dict) -> str:
    head = _their_projector_or_classifier(key, "fc")
    if head is not None:
        return head
    for pattern, replacement in _RESNET_NAMES:
        if pattern.match(key):
            return pattern.sub(replacement, key, count=1)
    return key


register_layout(Layout("resnet", "NC-OOD / torchvision ResNet", ("conv1.weight", "layer1.0.conv1.weight"),
                       _infer_resnet, _resnet_key))


# --------------------------------------------------------------------------- VGG17 (NC-OOD)

def _vgg_offsets() -> list[int]:
    """Index in the official flat ``features`` list of each of our blocks' first module."""
    offsets, start = [], 0
    for n_convs, _ in VGG17_BLOCKS:
        offsets.append(start)
        start += 3 * n_convs + 1
    return offsets


VGG_OFFSETS = _vgg_offsets()


def _infer_vgg(sd: dict, opts: dict) -> dict:
    _reject(opts, ("global_pool",), "VGG")
    convs = sorted(int(m.group(1)) for key, v in sd.items() if (m := re.match(r"^features\.(\d+)\.weight$", key))
                   and v.dim() == 4)
    expected = [offset + 3 * j for offset, (n, _) in zip(VGG_OFFSETS, VGG17_BLOCKS) for j in range(n)]
    arch = _check_arch("VGG", opts["arch"], "vgg17" if convs == expected else None, ("vgg17",),
                       f"a VGG with {len(convs)} convolutions")
    first = sd["features.0.weight"]
    return dict(arch=arch, num_classes=_classes(sd, "classifier.weight"),
                nc_control=_projector_kwargs(sd, "projection_head", opts,
                                             embed_dim=int(sd["classifier.weight"].shape[1])),
                norm="bn" if "features.1.running_mean" in sd else "gn_ws", width=first.shape[0] / 64,
                in_chans=int(first.shape[1]), conv_bias="features.0.bias" in sd,
                img_size=opts["img_size"] or DEFAULT_IMG_SIZE)


def _vgg_key(key: str, kwargs: dict) -> str:
    head = _their_projector_or_classifier(key, "classifier")
    if head is not None:
        return head
    match = re.match(r"^encoder\.block(\d)\.(\d+)\.(.+)$", key)
    if match:
        block, index, rest = int(match.group(1)), int(match.group(2)), match.group(3)
        return f"features.{VGG_OFFSETS[block - 1] + index}.{rest}"
    return key


register_layout(Layout("vgg", "NC-OOD VGG17", ("features.0.weight",), _infer_vgg, _vgg_key))


# --------------------------------------------------------------------------- ViT (NC-OOD, timm)

VIT_WIDTHS = {192: "vit_tiny", 384: "vit_small"}
VIT_DEPTH = 12


def _infer_vit(sd: dict, opts: dict) -> dict:
    proj = sd["patch_embed.proj.weight"]
    depth = _count(sd, r"blocks\.(\d+)\.")
    arch = _check_arch("ViT", opts["arch"], VIT_WIDTHS.get(int(proj.shape[0])) if depth == VIT_DEPTH else None,
                       tuple(VIT_WIDTHS.values()), f"a ViT of width {proj.shape[0]} and depth {depth}")
    patch = int(proj.shape[-1])
    class_token = "cls_token" in sd
    img_size = opts["img_size"] or DEFAULT_IMG_SIZE
    if "pos_embed" in sd:
        tokens = int(sd["pos_embed"].shape[1]) - int(class_token)
        grid = math.isqrt(max(tokens, 0))
        if grid * grid != tokens:
            raise ValueError(f"pos_embed has {sd['pos_embed'].shape[1]} rows, which is no square grid of patches"
                             f"{' plus the class token' if class_token else ''}; hosted: one row per token")
        if opts["img_size"] is not None and opts["img_size"] != grid * patch:
            raise ValueError(f"this ViT takes {grid * patch} px images (its position embedding covers {grid}x{grid} "
                             f"patches of {patch} px); pass --image_size {grid * patch}")
        img_size = grid * patch
    pool = opts["global_pool"] or ("token" if class_token else "avg")
    return dict(arch=arch, num_classes=_classes(sd, "head.weight"),
                nc_control=_projector_kwargs(sd, "projection_head", opts, embed_dim=int(proj.shape[0])),
                in_chans=int(proj.shape[1]), img_size=img_size, patch_size=patch, class_token=class_token,
                pos_embed="learned" if "pos_embed" in sd else "sincos", global_pool=pool)


def _vit_key(key: str, kwargs: dict) -> str:
    head = _their_projector_or_classifier(key, "head")
    if head is not None:
        return head
    return key[len("encoder.vit."):] if key.startswith("encoder.vit.") else key


def _vit_derived(key: str, kwargs: dict) -> bool:
    return key == "encoder.vit.pos_embed" and kwargs["pos_embed"] == "sincos"


register_layout(Layout("vit", "NC-OOD / timm ViT", ("patch_embed.proj.weight", "blocks.0.attn.qkv.weight"),
                       _infer_vit, _vit_key, _vit_derived))
