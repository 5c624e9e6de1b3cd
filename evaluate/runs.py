"""The shared run set-up of every evaluator: checkpoints in, cached layer features out, the
model's own head, the official linear probe and the streamed NC metrics of a cached layer.

``eval_nc.py``, ``eval_ood.py`` and ``train_lp.py`` all start from ``EVAL_DEFAULTS`` (plus their
own keys), open their checkpoints with :func:`open_runs`, read features through
:func:`features` (so a checkpoint's features are extracted once per dataset and split and then
reused by every evaluator), and train probes with :func:`probe`. :func:`open_runs` holds
``--out_dir`` for the evaluator's ``--out_name`` from its start (a second evaluator writing the
same results is refused) and refuses a checkpoint with non-finite weights; :func:`write_tables`,
through which every evaluator writes its results, records the evaluated checkpoints' content
hashes and replaces the previous run's output set as a whole.
"""
from __future__ import annotations

from argparse import Namespace
from dataclasses import dataclass, field
from pathlib import Path

import torch

from core.checkpoint import check_weights_finite, file_hash, load_checkpoint
from core.config import save_config
from core.errors import UserError
from core.lock import hold
from core.outputs import replace_outputs
from core.tables import text_table, write_results
from data import DatasetSpec, parse_spec
from evaluate.probe import ORDERS, PROBE_RECIPES, ProbeResult, train_probe
from features import FeatureSet, get_features
from features import resolve_layers as resolve_module_layers
from metrics.accuracy import topk_accuracy
from metrics.nc import stream_nc_metrics
from models.foreign import FOREIGN_HELP, FOREIGN_OPTIONS, FOREIGN_TYPES
from nc_control import PROJECTOR_LAYERS, NCConfig

EVAL_DEFAULTS: dict = dict(
    ckpt=[], names=[], dataset="fashion_mnist:classes=0-5", data=None, image_size=32, max_per_class=None,
    layers=[], cache_dir="cache/features", batch_size=256, workers=0, device="auto", out_dir="results/eval",
    seed=0, float16=False, precision="float32", probe_epochs=30, probe_lr=None, probe_batch_size=None,
    probe_solver="adamw", probe_recipe="cnn", probe_wd=None, probe_order="shuffle", bootstrap=200, **FOREIGN_OPTIONS,
)
EVAL_TYPES = {"ckpt": list[str], "names": list[str], "layers": list[str], "data": str, "max_per_class": int,
              "probe_lr": float, "probe_batch_size": int, "probe_wd": float, **FOREIGN_TYPES}
EVAL_HELP = {
    **FOREIGN_HELP,
    "ckpt": "checkpoint file(s) written by pretrain.py (e.g. a baseline and an NC-controlled one), or of the "
            "official NC-OOD code, torchvision or timm (converted on load, see --arch)",
    "names": "display names for the checkpoints (default: their file names)",
    "dataset": "the in-distribution dataset spec, [label=]name[:key=value,...], e.g. fashion_mnist:classes=0-5",
    "data": "root folder of the in-distribution dataset (when its spec has no root=)",
    "layers": "layers to evaluate: named layers (last_conv, encoder, projector_raw, projector, ...) or dotted "
              "module paths (encoder.layer4.1.conv2); default: every named layer ('classifier', the logits, "
              "only when named)",
    "cache_dir": "where extracted features are cached (reused by every evaluator)",
    "out_dir": "where tables and figures are written",
    "float16": "store cached features as float16 (half the disk; metrics still run in float64)",
    "precision": "arithmetic of the extraction forward pass: float32 (the official evaluation's) or bfloat16 "
                 "(autocast; faster on GPUs, but it floors NC1 of collapsed features); part of the cache key",
    "probe_solver": "adamw (the official probe recipe) or lbfgs (logistic regression, penalty chosen on a validation split)",
    "probe_recipe": "the official AdamW probe recipe: cnn (lr 1e-3, weight decay 0, batch 256, W ~ N(0, 0.01^2), b = 0) "
                    "or vit (lr 1e-2, weight decay 1e-4, batch 2048 = 512 x 4 GPUs, W ~ trunc_normal(0, 0.01^2), "
                    "default bias, 3 repeats per sample as the official ViT probe's sampler); see evaluate/probe.py",
    "probe_lr": "adamw probe learning rate (default: the recipe's)",
    "probe_batch_size": "adamw probe batch size (default: the recipe's)",
    "probe_wd": "adamw probe weight decay (default: the recipe's)",
    "probe_order": "adamw probe batch order: shuffle (drawn anew every epoch) or fixed (drawn once and repeated, as "
                   "the official CNN probes read features extracted once in one random order)",
    "bootstrap": "bootstrap replicates written beside each row's figure (nc1_boot, fpr95_boot, best_acc_boot: the "
                 "figure on resamples of the samples; the intervals of Figure 1's R); 0 = none "
                 "(see evaluate/bootstrap.py)",
}


@dataclass
class Run:
    """One checkpoint under evaluation."""
    name: str
    path: Path
    model_kwargs: dict
    state_dict: dict
    history: list[dict] = field(default_factory=list)  # the per-epoch records of pretrain.py
    foreign: dict | None = None  # the conversion options of a checkpoint of another codebase
    config: dict = field(default_factory=dict)  # pretrain.py's resolved configuration (dataset, classes, ...)
    class_names: list[str] | None = None  # the training set's class names, index = label (pretrain.py records them)

    @property
    def num_classes(self) -> int:
        return int(self.model_kwargs["num_classes"])

    @property
    def nc(self) -> NCConfig:
        return NCConfig.from_any(self.model_kwargs.get("nc_control"))

    @property
    def has_projector(self) -> bool:
        return self.nc.has_projector

    @property
    def head_layer(self) -> str:
        """The layer whose features the model's own classifier reads: ``projector``,
        ``head_input`` (the normalized encoder embedding, with ``l2_features``) or ``encoder``."""
        return self.nc.head_layer

    def head(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's own classifier (W: C x D, b: C)."""
        return self.state_dict["classifier.weight"].float(), self.state_dict["classifier.bias"].float()

    def skeleton(self) -> torch.nn.Module:
        """The checkpoint's architecture on the meta device (no weights, no memory): for layer names."""
        from models import build_model
        with torch.device("meta"):
            return build_model(**self.model_kwargs)

    def layer_names(self) -> list[str]:
        """Every named layer, in depth order, without the classifier's logits."""
        return [name for name in self.skeleton().named_layers() if name != "classifier"]

    def layer_depths(self, layers: list[str]) -> dict[str, int]:
        """Depth index of each of ``layers`` (named layers or module paths) among every named layer and
        ``layers``: the order in which their modules finish in the forward pass (children before
        parents, in registration order, as in these feed-forward models)."""
        model = self.skeleton()
        finished: dict[int, int] = {}

        def visit(module: torch.nn.Module) -> None:
            for child in module.children():
                visit(child)
            finished.setdefault(id(module), len(finished))

        visit(model)
        names = list(dict.fromkeys([*self.layer_names(), *layers]))
        modules = resolve_module_layers(model, names)
        ranked = sorted(names, key=lambda name: finished[id(modules[name])])
        return {name: index for index, name in enumerate(ranked)}


def open_runs(cfg: Namespace) -> list[Run]:
    recipe = getattr(cfg, "probe_recipe", None)  # checked before any extraction, for the evaluators that probe
    if recipe is not None and recipe not in PROBE_RECIPES:
        raise UserError(f"--probe_recipe must be one of {', '.join(PROBE_RECIPES)}, got {recipe!r}")
    if getattr(cfg, "probe_order", "shuffle") not in ORDERS:
        raise UserError(f"--probe_order must be one of {', '.join(ORDERS)}, got {cfg.probe_order!r}")
    if not cfg.ckpt:
        raise UserError("no checkpoint given; pass --ckpt PATH [PATH ...] (files written by pretrain.py)")
    if cfg.names and len(cfg.names) != len(cfg.ckpt):
        raise UserError(f"--names has {len(cfg.names)} entries for {len(cfg.ckpt)} checkpoints; give one name each")
    hold_out_dir(cfg)
    runs = []
    options = foreign_options(cfg)
    for path, name in zip(cfg.ckpt, run_names(cfg)):
        ckpt = load_checkpoint(path, foreign=options)
        check_weights_finite(ckpt["state_dict"], f"checkpoint {path}")
        foreign = options if "foreign" in ckpt else None
        if foreign is not None:
            print(f"{name}: {path} read as {ckpt['foreign']['summary']}", flush=True)
        runs.append(Run(name, Path(path), dict(ckpt["model_kwargs"]), ckpt["state_dict"], ckpt.get("history") or [],
                        foreign, config=dict(ckpt.get("config") or {}), class_names=ckpt.get("class_names") or None))
    names = [run.name for run in runs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:  # rows are keyed by model name
        raise UserError(f"several checkpoints are named {', '.join(repeated)}; pass --names with one distinct "
                        f"name per checkpoint (the default names are the file names)")
    return runs


def run_names(cfg: Namespace) -> list[str]:
    """The name of each ``--ckpt``: its ``--names`` entry, else its file name without the suffix."""
    return list(cfg.names) if cfg.names else [Path(path).stem for path in cfg.ckpt]


def hold_out_dir(cfg: Namespace) -> None:
    """Hold ``--out_dir`` for this evaluator's ``--out_name`` from its start (:func:`core.lock.hold`):
    a second evaluator writing the same results there is refused, naming this one."""
    if getattr(cfg, "out_dir", None) and getattr(cfg, "out_name", None):
        hold(cfg.out_dir, cfg.out_name, what=f"evaluation writing its {cfg.out_name} results", flag="--out_dir",
             elsewhere="pass another --out_dir or --out_name")


def checkpoint_records(cfg: Namespace) -> dict[str, dict[str, str]]:
    """``{model name: {"path", "sha256"}}`` of the evaluated checkpoints (the content hash the
    feature cache keys on), recorded in every result file so that results of different
    checkpoints are never mixed up."""
    return {name: {"path": str(Path(path).resolve()), "sha256": file_hash(path)}
            for path, name in zip(cfg.ckpt, run_names(cfg))}


def foreign_options(cfg: Namespace) -> dict:
    """How checkpoints of other codebases are read: the model flags (None = inferred) and the
    evaluated image size (the size of a ViT whose file does not record it)."""
    return {**{key: getattr(cfg, key, None) for key in FOREIGN_OPTIONS}, "img_size": getattr(cfg, "image_size", None)}


def id_spec(cfg: Namespace) -> DatasetSpec:
    spec = parse_spec(cfg.dataset)
    if cfg.data and "root" not in spec.options:
        spec = DatasetSpec(spec.label, spec.name, {**spec.options, "root": cfg.data})
    return spec


def trained_classes(run: Run, spec: DatasetSpec) -> list[str] | None:
    """The class names ``spec`` must have when it is the dataset ``run`` was trained on (same
    dataset name in its config): those the checkpoint records. For a checkpoint without them
    (older ones) the class selections of its config and of ``spec`` must agree instead (one-line
    UserError otherwise); a checkpoint that records neither (another codebase's) is not checked."""
    if run.config.get("dataset") != spec.name:
        return None
    if run.class_names:
        return list(run.class_names)
    if "classes" in run.config:
        everything = list(range(run.num_classes))
        trained = list(run.config["classes"]) if run.config["classes"] is not None else everything
        asked = list(spec.options["classes"]) if spec.options.get("classes") is not None else everything
        if len(trained) == len(asked) and trained != asked:  # a different count is the class-count error
            raise UserError(f"{run.path} was trained on {spec.name} classes {trained}, not {asked}; evaluate on the "
                            f"classes it was trained on ({spec.name}:classes={'+'.join(map(str, trained))})")
    return None


def features(cfg: Namespace, run: Run, spec: DatasetSpec, split: str, layers: list[str],
             check_classes: bool = False) -> FeatureSet:
    """The features of ``layers`` for ``spec``/``split`` under ``run``'s checkpoint, from the cache;
    ``check_classes``: the dataset must have the checkpoint's class count and, when it is the
    dataset the checkpoint was trained on, its classes (:func:`trained_classes`), checked before extraction."""
    kwargs = spec.kwargs(image_size=cfg.image_size, max_per_class=cfg.max_per_class, seed=cfg.seed)
    kwargs.update(split=split)
    return get_features(run.path, kwargs, layers, cache_dir=cfg.cache_dir, device=cfg.device,
                        batch_size=cfg.batch_size, num_workers=cfg.workers, float16=cfg.float16,
                        precision=cfg.precision,
                        num_classes=run.num_classes if check_classes else None, foreign=run.foreign,
                        class_names=trained_classes(run, spec) if check_classes else None)


def parse_split_choices(entries: list[str], labels: list[str], flag: str, of: str) -> dict[str, str]:
    """``['flowers=val']`` -> ``{'flowers': 'val'}`` for ``flag`` (e.g. ``--ood_splits``); every label
    must be one of ``labels``, the labels of the ``of`` specs (e.g. ``--ood``)."""
    splits: dict[str, str] = {}
    for entry in entries:
        label, sep, split = (part.strip() for part in entry.partition("="))
        if not sep or not label or not split:
            raise UserError(f"{flag} entry {entry!r} is not LABEL=SPLIT; write e.g. flowers102=val")
        if label not in labels:
            raise UserError(f"{flag} names {label!r}, which is no {of} label ({', '.join(labels)})")
        splits[label] = split
    return splits


def resolve_layers(cfg: Namespace, run: Run, default: list[str] | None = None) -> list[str]:
    """``--layers`` (default: ``default``, else every named layer but the logits): named layers or
    dotted module paths (``encoder.layer4.1.conv2``). The projector layers are skipped for a model
    without a projector (a baseline), so one layer list serves both. The logits layer
    ``classifier`` is never a default but may be named, e.g. DDU's GMM on the logits."""
    available = run.layer_names()
    wanted = list(cfg.layers) or (default if default is not None else available)
    wanted = [layer for layer in wanted if layer not in PROJECTOR_LAYERS or run.has_projector]
    if not wanted:
        raise UserError(f"{run.name} has none of the layers {', '.join(cfg.layers or default or [])}; "
                        f"its named layers are: {', '.join(available)}")
    try:
        resolve_module_layers(run.skeleton(), wanted)
    except UserError as exc:
        raise UserError(f"{run.name}: {exc}") from None
    return wanted


def probe(cfg: Namespace, train: FeatureSet, layer: str, test: FeatureSet | None = None,
          num_classes: int | None = None) -> ProbeResult:
    """The official linear probe (``--probe_recipe``) on ``layer`` of ``train`` (tested on ``test`` when given)."""
    return probe_on(cfg, train[layer], train.labels, num_classes or train.num_classes,
                    test_x=None if test is None else test[layer], test_y=None if test is None else test.labels)


def probe_on(cfg: Namespace, x: torch.Tensor, y: torch.Tensor, num_classes: int, test_x: torch.Tensor | None = None,
             test_y: torch.Tensor | None = None) -> ProbeResult:
    """The official linear probe (``--probe_recipe`` and the probe flags of ``cfg``) on features ``x``, labels ``y``."""
    return train_probe(x, y, num_classes, test_x=test_x, test_y=test_y, solver=cfg.probe_solver,
                       recipe=cfg.probe_recipe, epochs=cfg.probe_epochs, lr=cfg.probe_lr, weight_decay=cfg.probe_wd,
                       batch_size=cfg.probe_batch_size, seed=cfg.seed, order=cfg.probe_order)


def head_accuracy(fs: FeatureSet, layer: str, weight: torch.Tensor, bias: torch.Tensor) -> float:
    """Top-1 of the linear classifier ``W h + b`` (float64) on the features of ``layer``."""
    logits = fs[layer].double() @ weight.double().T + bias.double()
    return topk_accuracy(logits, fs.labels)[0]


def layer_nc_metrics(fs: FeatureSet, layer: str, weight=None, bias=None, batch_size: int = 8192,
                     centres: torch.Tensor | None = None) -> dict[str, float]:
    """The NC metrics (:data:`metrics.nc.NC_METRICS`) of one cached layer, streamed in batches:
    the features never all sit in memory. ``centres``: the class means of the nearest-class-centre
    accuracy (default: the layer's own)."""
    return stream_nc_metrics(lambda: fs.iter_batches(layer, batch_size), fs.num_classes, fs.dim(layer), weight, bias,
                             centres=centres)


def write_tables(cfg: Namespace, rows: list[dict], columns: list[str] | None = None, shown: list[str] | None = None,
                 extra: dict | None = None) -> dict[str, Path]:
    """An evaluator's rows as ``<out_name>.json`` (with the resolved config, the evaluated
    ``checkpoints`` and ``extra``), ``.csv`` and ``.md`` (``columns``, default: every key), its config
    as ``<out_name>.config.yaml``, and the table printed (``shown`` columns, default ``columns``);
    returns the paths. The files of the task's previous run in ``--out_dir`` are replaced as a whole
    set: what it wrote and this run does not, e.g. a figure of a scorer no longer asked for, is
    removed (:func:`core.outputs.replace_outputs`)."""
    extra = {"config": {k: v for k, v in vars(cfg).items() if k != "config"},
             "checkpoints": checkpoint_records(cfg), **(extra or {})}
    replace_outputs(cfg.out_dir, cfg.out_name)
    paths = write_results(rows, cfg.out_dir, cfg.out_name, columns=columns, extra=extra)
    paths["config"] = save_config(cfg, Path(cfg.out_dir) / f"{cfg.out_name}.config.yaml")
    print(text_table(rows, shown or columns))
    return paths

