"""One registry of backbones and the factory that wraps them in a :class:`ControlledNet`.

A backbone builder is registered with ``@register_model`` under its function name, which must
have a default configuration in :data:`models.defaults.ARCHS`. It is called with ``in_chans``,
``img_size`` and the build options its default configuration lists (``options``), as keyword
arguments, and returns an encoder (``embed_dim`` attribute, ``stages()`` method). An option
that an architecture does not take must stay at its default (:data:`OPTION_DEFAULTS`); otherwise
:func:`build_model` refuses it, naming the architectures that take it.
"""
from __future__ import annotations

import math
import numbers
from typing import Callable

from models.defaults import ARCHS, arch_defaults
from nc_control import ControlledNet, NCConfig

MODELS: dict[str, Callable] = {}
STEMS = ("imagenet", "cifar")
ACTIVATIONS = ("relu", "leaky_relu")
SHORTCUTS = ("conv", "avgpool")
#: Every build option and its default; an architecture takes those its default configuration lists.
OPTION_DEFAULTS = {"norm": "bn", "stem": "imagenet", "width": 1.0, "patch_size": 16, "drop_path": 0.0,
                   "spectral_norm": 0.0, "activation": "relu", "shortcut": "conv", "class_token": False,
                   "pos_embed": "sincos", "global_pool": "avg", "conv_bias": False}


def register_model(fn: Callable) -> Callable:
    """Decorator: add ``fn`` to :data:`MODELS` under ``fn.__name__`` (which needs a default configuration)."""
    if fn.__name__ in MODELS:
        raise ValueError(f"model {fn.__name__!r} is registered twice")
    if fn.__name__ not in ARCHS:
        raise ValueError(f"model {fn.__name__!r} has no default configuration in models/defaults.py")
    MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """Registered architecture names, sorted."""
    return sorted(MODELS)


def _routed_options(arch: str, options: dict) -> dict:
    """The options ``arch`` takes; any other away from its default is a ValueError saying why."""
    defaults = arch_defaults(arch)
    for name, value in options.items():
        if name in defaults.options or value == OPTION_DEFAULTS[name]:
            continue
        takers = "/".join(a for a in MODELS if name in ARCHS[a].options)
        why = defaults.declines.get(name, f"{name} applies to {takers} only")
        raise ValueError(f"{arch} does not take {name}={value!r}: {why}; leave it at its default "
                         f"{OPTION_DEFAULTS[name]!r}")
    return {name: options[name] for name in defaults.options}


def build_model(arch: str, num_classes: int, *, nc_control: NCConfig | dict | None = None, norm: str = "bn",
                stem: str = "imagenet", width: float = 1.0, in_chans: int = 3, img_size: int = 224,
                patch_size: int = 16, drop_path: float = 0.0, spectral_norm: float = 0.0,
                activation: str = "relu", shortcut: str = "conv", class_token: bool = False,
                pos_embed: str = "sincos", global_pool: str = "avg", conv_bias: bool = False) -> ControlledNet:
    """Build ``arch`` as encoder -> [projector -> L2 norm] -> classifier.

    ``nc_control`` is an :class:`NCConfig`, a dict of its fields, or ``None`` (baseline).
    ``norm`` ('bn' | 'gn_ws'), ``stem`` ('imagenet' | 'cifar') and ``width`` shape the CNNs;
    ``img_size``, ``patch_size`` and ``drop_path`` shape the ViTs (see each builder).
    The DDU backbone options apply to the ResNets only (see :mod:`models.resnet`):
    ``spectral_norm`` (coefficient of the soft spectral normalization of every convolution,
    0 = off, DDU uses 3.0), ``activation`` ('relu' | 'leaky_relu') and ``shortcut``
    ('conv' | 'avgpool').
    ``class_token``, ``pos_embed`` ('sincos' | 'learned') and ``global_pool`` ('avg' | 'token')
    apply to the ViTs, ``conv_bias`` to VGG (see :mod:`models.vit`, :mod:`models.vgg`); they host
    the models of other codebases (:mod:`models.foreign`).
    The returned model carries ``build_kwargs``, a JSON-able dict with which
    ``build_model(**model.build_kwargs)`` rebuilds the same architecture.
    """
    if arch not in MODELS:
        raise ValueError(f"unknown arch {arch!r}; valid names: {', '.join(list_models())}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    if stem not in STEMS:
        raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
    if not width > 0:
        raise ValueError(f"width must be > 0, got {width!r}")
    if in_chans < 1:
        raise ValueError(f"in_chans must be >= 1, got {in_chans!r}")
    if not 0.0 <= drop_path < 1.0:
        raise ValueError(f"drop_path must be in [0, 1), got {drop_path!r}")
    if (isinstance(spectral_norm, bool) or not isinstance(spectral_norm, numbers.Real)
            or not math.isfinite(spectral_norm) or spectral_norm < 0):
        raise ValueError(f"spectral_norm is a coefficient: a number >= 0 (0 = off, DDU uses 3.0), "
                         f"got {spectral_norm!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if shortcut not in SHORTCUTS:
        raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
    options = dict(norm=norm, stem=stem, width=float(width), patch_size=int(patch_size), drop_path=float(drop_path),
                   spectral_norm=float(spectral_norm), activation=activation, shortcut=shortcut,
                   class_token=bool(class_token), pos_embed=pos_embed, global_pool=global_pool, conv_bias=bool(conv_bias))
    nc = NCConfig.from_any(nc_control)
    encoder = MODELS[arch](in_chans=int(in_chans), img_size=int(img_size), **_routed_options(arch, options))
    model = ControlledNet(encoder, num_classes, nc)
    model.build_kwargs = dict(arch=arch, num_classes=num_classes, nc_control=nc.to_dict(), norm=norm, stem=stem,
                              width=float(width), in_chans=int(in_chans), img_size=int(img_size),
                              **{k: v for k, v in options.items() if k not in ("norm", "stem", "width")})
    return model
