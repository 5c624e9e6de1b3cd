"""OOD detection layer by layer: scorers fitted on ID features of a layer, applied to ID test and OOD
features of the same layer, with the detection metrics of ood.metrics.

The default is the paper's protocol: the energy score (logsumexp of the logits, T = 1) of a
linear probe trained on ID training features (official probe recipe), at the encoder and at the
L2-normalized projector output (the paper scripts pass the official CNN hook point, ``last_conv``).
Each OOD set's test split is scored unless ``--ood_splits`` names another (the official code
scores Flowers-102's val split).

Any scorer of ``ood.SCORERS`` runs at any layer, with options from the command line
(``--scorers react ash:percentile=65 nci:alpha=0.01``; ``gmm`` on the encoder reproduces DDU). A
scorer that reads a classifier gets, at every layer, that layer's linear probe (``--logits probe``,
the default) or the model's own classifier at the layer it reads (``--logits model``); every row
names the classifier it used. A scorer that cannot work on a layer says why in one warning line and
its rows carry the reason in ``note``.

``--search`` (with ``--val_ood``) tunes each scorer's options as OpenOOD v1.5 does
(:mod:`evaluate.search`); ``--benchmark`` runs an OpenOOD v1.5 benchmark preset and reports
near-OOD and far-OOD averages; ``--save_scores`` writes every sample's score.
"""
from __future__ import annotations

import warnings
from argparse import Namespace
from dataclasses import dataclass, field

import numpy as np
import torch

from core.errors import UserError
from core.plots import score_histograms
from core.progress import progress
from data import DATASETS, DatasetSpec, parse_spec
from evaluate.bootstrap import resamples
from evaluate.runs import (
    EVAL_DEFAULTS,
    EVAL_HELP,
    EVAL_TYPES,
    Run,
    features,
    head_accuracy,
    id_spec,
    open_runs,
    parse_split_choices,
    probe_on,
    resolve_layers,
    write_tables,
)
from evaluate.scores import write_scores
from evaluate.search import (
    ScorerSpec,
    search_layer,
    search_rows_columns,
    split_for_search,
)
from metrics.nc import class_means, nc5
from ood import SCORERS, detection_metrics, fpr95_strict
from ood.metrics import fpr95_replicates

EMBEDDED_OOD = ["near=fashion_mnist:classes=6-9", "animal_mnist", "digits", "textures"]
OOD_DEFAULTS = {**EVAL_DEFAULTS, "ood": EMBEDDED_OOD, "ood_splits": [], "scorers": ["energy"], "logits": "probe",
                "out_name": "ood", "histograms": True, "search": False, "val_ood": [], "val_fraction": 0.1,
                "save_scores": False, "benchmark": None, "benchmark_root": None}
OOD_TYPES = {**EVAL_TYPES, "ood": list[str], "ood_splits": list[str], "scorers": list[str], "val_ood": list[str],
             "benchmark": str, "benchmark_root": str}
OOD_HELP = {**EVAL_HELP,
            "ood": "OOD dataset specs, [label=]name[:key=value,...] (their test split is scored)",
            "ood_splits": "LABEL=SPLIT: score that OOD set's SPLIT instead of its test split, e.g. flowers102=val "
                          "(the official protocol)",
            "layers": "layers to score (default: encoder and projector)",
            "scorers": f"OOD scorers, NAME or NAME:option=value,... (higher score = more in-distribution): "
                       f"{', '.join(SCORERS)}",
            "logits": "the classifier of the scorers that read one: probe (a linear probe per layer, the paper) or "
                      "model (the model's own classifier, only at the layer it reads)",
            "out_name": "file name stem of the tables and figures",
            "histograms": "draw ID-vs-OOD score histograms per scorer",
            "search": "tune each scorer's options on validation data as OpenOOD v1.5 does: every candidate of its "
                      "search space is fitted on the ID training part (or the ID validation part, for the scorers "
                      "OpenOOD fits there) and chosen by the AUROC of ID validation against --val_ood; the test "
                      "sets are read only afterwards",
            "val_ood": "with --search: the validation OOD set(s), specs scored on their val split (else train), "
                       "never the test split",
            "val_fraction": "with --search: the stratified fraction of the ID training split held out as ID "
                            "validation (drawn by --seed); the probes and the fits use the rest",
            "save_scores": "also write every sample's score per model, layer, scorer and set to "
                           "<out_name>_scores.csv.gz (columns model, layer, scorer, options, set, index, score)",
            "benchmark": "an OpenOOD v1.5 benchmark preset, cifar10, cifar100 or imagenet200: its ID set, near- and "
                         "far-OOD sets and validation OOD set (needs --benchmark_root; --dataset/--ood/--val_ood "
                         "must be left at their defaults)",
            "benchmark_root": "the folder laid out as OpenOOD's data folder (benchmark_imglist/, images_classic/, "
                              "images_largescale/); nothing is downloaded"}
METRIC_KEYS = ["fpr95", "auroc", "aupr_in", "aupr_out", "fpr95_ood_positive", "fpr95_strict"]
AVERAGED = [*METRIC_KEYS, "nc5"]  # what the average rows average over the OOD sets
TABLE_COLUMNS = ["model", "layer", "scorer", "classifier", "ood", *METRIC_KEYS, "id_acc", "nc5"]
GROUP_AVERAGES = {"near": "nearood", "far": "farood"}  # the rows averaging a benchmark's near and far sets


OOD_OPTIONS = dict(defaults=OOD_DEFAULTS, types=OOD_TYPES, helps=OOD_HELP)


def run_ood(cfg: Namespace) -> list[dict]:
    """eval_ood.py: score, then print and write the tables and histograms; returns the rows."""
    plan = plan_ood(cfg)
    result = evaluate_ood(cfg, plan)
    report_ood(cfg, plan, result)
    return result.rows


@dataclass
class OODPlan:
    """What an evaluation scores: the ID spec, the test OOD sets (label -> (spec, split)), their
    near/far groups (benchmarks), the validation OOD sets of a search and the scorers."""
    id: DatasetSpec
    tests: dict[str, tuple[DatasetSpec, str]]
    groups: dict[str, str]
    vals: dict[str, tuple[DatasetSpec, str]]
    scorers: list[ScorerSpec]


@dataclass
class OODResult:
    rows: list[dict] = field(default_factory=list)
    scores: dict = field(default_factory=dict)  # (model, layer, scorer label, search, options) -> (id, {set: ood})
    search_rows: list[dict] = field(default_factory=list)


def _checked_splits(specs: list[DatasetSpec], chosen: dict[str, str], default: str, flag: str) -> dict:
    out = {}
    for spec in specs:
        valid = DATASETS[spec.name].splits if spec.name in DATASETS else ()
        split = chosen.get(spec.label, default if default in valid else "train")
        if valid and split not in valid:
            raise UserError(f"OOD set {spec.label}: {spec.name} has no {split} split; pick one of {', '.join(valid)} "
                            f"with {flag} {spec.label}=SPLIT")
        out[spec.label] = (spec, split)
    return out


def _benchmark(cfg: Namespace):
    from data.benchmarks import benchmark_specs

    if cfg.dataset != OOD_DEFAULTS["dataset"] or cfg.ood != OOD_DEFAULTS["ood"] or cfg.val_ood:
        raise UserError(f"--benchmark {cfg.benchmark} sets the ID, OOD and validation OOD sets; drop --dataset, "
                        f"--ood and --val_ood")
    if not cfg.benchmark_root:
        raise UserError(f"--benchmark {cfg.benchmark} needs --benchmark_root, the folder of OpenOOD's data layout")
    return benchmark_specs(cfg.benchmark, cfg.benchmark_root)


def plan_ood(cfg: Namespace) -> OODPlan:
    """Check every flag and dataset choice before anything is extracted."""
    if cfg.logits not in ("probe", "model"):
        raise UserError(f"--logits must be probe or model, got {cfg.logits!r}")
    scorers = [ScorerSpec.parse(text) for text in cfg.scorers]
    if not scorers:
        raise UserError("no scorer given; pass --scorers NAME [NAME ...]")
    groups: dict[str, str] = {}
    if cfg.benchmark:
        bench = _benchmark(cfg)
        id_text, ood_texts, val_texts = bench.id, [*bench.near, *bench.far], [bench.val_ood]
        groups = {**{parse_spec(t).label: "near" for t in bench.near}, **{parse_spec(t).label: "far" for t in bench.far}}
        spec = parse_spec(id_text)
    else:
        spec, ood_texts, val_texts = id_spec(cfg), cfg.ood, cfg.val_ood
    ood_specs = [parse_spec(text) for text in ood_texts]
    if not ood_specs:
        raise UserError("no OOD dataset given; pass --ood SPEC [SPEC ...]")
    labels = [s.label for s in ood_specs]
    if len(set(labels)) != len(labels) or set(labels) & {"average", *GROUP_AVERAGES.values()}:
        raise UserError(f"the OOD sets need distinct labels other than 'average', 'nearood' and 'farood' (got "
                        f"{', '.join(labels)}); label a spec as label=name:...")
    chosen = parse_split_choices(cfg.ood_splits, labels, "--ood_splits", "--ood")
    tests = _checked_splits(ood_specs, chosen, "test", "--ood_splits")
    vals = _checked_splits([parse_spec(t) for t in val_texts], {}, "val", "--val_ood")
    if cfg.search and not vals:
        raise UserError("--search chooses options by the AUROC of ID validation against validation OOD data; pass "
                        "--val_ood SPEC (e.g. a held-out split of one far-OOD set)")
    if vals and not cfg.search:
        raise UserError("--val_ood is the validation OOD data of --search; add --search or drop it")
    for label, (vspec, split) in vals.items():
        if any(t.name == vspec.name and t.options == vspec.options and s == split for t, s in tests.values()):
            raise UserError(f"validation OOD set {label} is a test OOD set too ({vspec.name}, {split} split); "
                            f"validate on another split or set, the test sets stay untouched")
    if not 0.0 < cfg.val_fraction < 1.0:
        raise UserError(f"--val_fraction must be in (0, 1), got {cfg.val_fraction}")
    return OODPlan(spec, tests, groups, vals, scorers)


@dataclass
class LayerFit:
    """One layer's fit data: the ID features and labels scorers are fitted on (``val``: the ID
    validation part of a search, else None), the classifier (W, b, its name) and the scorer failures."""
    layer: str
    train: torch.Tensor
    labels: torch.Tensor
    val: torch.Tensor | None
    val_labels: torch.Tensor | None
    weight: torch.Tensor | None
    bias: torch.Tensor | None
    classifier: str

    def fit_data(self, scorer: ScorerSpec) -> tuple[torch.Tensor, torch.Tensor]:
        """The features a scorer is fitted on: the validation part for the scorers OpenOOD fits there (in a search)."""
        if scorer.fit_split == "val" and self.val is not None:
            return self.val, self.val_labels
        return self.train, self.labels


def layer_fit(cfg: Namespace, run: Run, train, layer: str, part: tuple | None) -> LayerFit:
    """The fit data of ``layer``: all ID training features, or with a search the training part and
    the validation part (``part`` = their indices); the probe is trained on the training part."""
    x, y = train[layer], train.labels
    val = val_y = None
    if part is not None:
        fit_idx, val_idx = part
        x, y, val, val_y = x[fit_idx], y[fit_idx], x[val_idx], y[val_idx]
    weight = bias = None
    classifier = "none"
    if cfg.logits == "probe":
        result = probe_on(cfg, x, y, run.num_classes)
        weight, bias, classifier = result.weight, result.bias, "probe"
    elif layer == run.head_layer:
        (weight, bias), classifier = run.head(), "model"
    return LayerFit(layer, x, y, val, val_y, weight, bias, classifier)


def fit_and_score(scorer: ScorerSpec, fit: LayerFit, sets: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """``scorer`` fitted on ``fit`` (a fresh instance), scores of every set; a ValueError says why it cannot."""
    instance = scorer.build()
    x, y = fit.fit_data(scorer)
    weight, bias = (fit.weight, fit.bias) if scorer.uses_classifier else (None, None)
    instance.fit(x, y, weight=weight, bias=bias)
    return {label: instance.score(values).cpu().numpy() for label, values in sets.items()}


def detection_rows(base: dict, id_scores: np.ndarray, ood: dict[str, np.ndarray], groups: dict[str, str],
                   orthogonality: dict[str, float | None], replicates: dict | None = None) -> list[dict]:
    """One row per OOD set (with the layer's NC5 against it and, with ``replicates`` (resample indices
    per set, ``id`` for the ID test set), its FPR95's bootstrap replicates), then the near/far
    averages of a benchmark, then the average of all sets."""
    rows = []
    for label, scores in ood.items():
        row = {**base, "ood": label, **detection_metrics(id_scores, scores),
               "fpr95_strict": fpr95_strict(id_scores, scores), "nc5": orthogonality[label]}
        if replicates:
            row["fpr95_boot"] = fpr95_replicates(id_scores, scores, replicates["id"], replicates[label]).tolist()
        rows.append(row)
    averages = [(GROUP_AVERAGES[g], [r for r in rows if groups.get(r["ood"]) == g]) for g in GROUP_AVERAGES]
    for label, group in [*averages, ("average", list(rows))]:
        if group:
            row = {**base, "ood": label, **{k: _mean([r[k] for r in group]) for k in AVERAGED}}
            if replicates:
                row["fpr95_boot"] = np.mean([r["fpr95_boot"] for r in group], axis=0).tolist()
            rows.append(row)
    return rows


def replicate_indices(cfg: Namespace, plan: OODPlan, test, oods: dict) -> dict | None:
    """The bootstrap resamples (``--bootstrap``) of the ID test set and of each OOD set: the same at
    every layer and for every checkpoint (:mod:`evaluate.bootstrap`)."""
    if not cfg.bootstrap:
        return None
    out = {"id": resamples(len(test), cfg.bootstrap, cfg.seed, f"{plan.id.label}/test")}
    for label, fs in oods.items():
        out[label] = resamples(len(fs), cfg.bootstrap, cfg.seed, f"{label}/{plan.tests[label][1]}")
    return out


def _mean(values: list) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def layer_nc5(train, layer: str, oods: dict) -> dict[str, float]:
    """NC5 of the layer against each OOD set: the ID training class means against the set's mean feature."""
    means = class_means(lambda: train.iter_batches(layer), train.num_classes, train.dim(layer))
    out: dict[str, float | None] = {}
    for label, fs in oods.items():
        try:
            out[label] = nc5(means, fs[layer].double().mean(dim=0))
        except ValueError:  # a zero mean vector: the cosine is undefined
            out[label] = None
    return out


def failed_rows(base: dict, labels: list[str], reason: str) -> list[dict]:
    warnings.warn(f"{base['scorer']} cannot score layer {base['layer']} of {base['model']}: {reason}", stacklevel=2)
    return [{**base, "ood": label, **dict.fromkeys(AVERAGED), "note": reason} for label in [*labels, "average"]]


def score_run(cfg: Namespace, plan: OODPlan, run: Run, result: OODResult) -> None:
    """Every scorer on every layer of one checkpoint: the search first (ID train/val and validation
    OOD only), then the test sets."""
    layers = resolve_layers(cfg, run, default=["encoder", "projector"])
    train = features(cfg, run, plan.id, "train", layers, check_classes=True)
    part = split_for_search(train.labels, cfg.val_fraction, cfg.seed) if cfg.search else None
    fits = {layer: layer_fit(cfg, run, train, layer, part) for layer in layers}
    chosen = {layer: [(s, "") for s in plan.scorers] for layer in layers}
    if cfg.search:
        vals = {label: features(cfg, run, s, split, layers) for label, (s, split) in plan.vals.items()}
        for layer in progress(layers, desc=f"{run.name}: search", leave=False):
            rows, chosen[layer] = search_layer(run.name, fits[layer], plan.scorers, vals, fit_and_score)
            result.search_rows += rows
    test = features(cfg, run, plan.id, "test", layers)
    oods = {label: features(cfg, run, s, split, layers) for label, (s, split) in plan.tests.items()}
    replicates = replicate_indices(cfg, plan, test, oods)
    for layer in progress(layers, desc=f"{run.name}: OOD", leave=False):
        fit, orthogonality = fits[layer], layer_nc5(train, layer, oods)
        id_acc = head_accuracy(test, layer, fit.weight, fit.bias) if fit.weight is not None else None
        done: dict[str, tuple] = {}  # a search's chosen options may be the defaults: scored once
        for scorer, search in chosen[layer]:
            label = scorer.name if search else scorer.label
            base = {"model": run.name, "layer": layer, "scorer": label, **({"search": search} if search else {}),
                    "options": scorer.options_text, "id_acc": id_acc,
                    "classifier": fit.classifier if scorer.uses_classifier else "none"}
            if scorer.label not in done:
                try:
                    done[scorer.label] = (fit_and_score(scorer, fit, {"id": test[layer],
                                                                      **{k: fs[layer] for k, fs in oods.items()}}), "")
                except ValueError as exc:
                    done[scorer.label] = (None, str(exc))
            scores, failure = done[scorer.label]
            if scores is None:
                result.rows += failed_rows(base, list(oods), failure)
                continue
            scores = dict(scores)
            id_scores = scores.pop("id")
            result.rows += detection_rows(base, id_scores, scores, plan.groups, orthogonality, replicates)
            result.scores[(run.name, layer, label, search, scorer.options_text)] = (id_scores, scores)


def evaluate_ood(cfg: Namespace, plan: OODPlan | None = None) -> OODResult:
    """Rows (model x layer x scorer x OOD set, plus the averages per model, layer and scorer), the
    scores behind them and, with ``--search``, the search table."""
    plan = plan or plan_ood(cfg)
    result = OODResult()
    for run in open_runs(cfg):
        score_run(cfg, plan, run, result)
    return result


CONVENTIONS = {"score": "higher = more in-distribution",
               "fpr95": "fraction of OOD accepted at the threshold keeping 95% of ID (the paper's)",
               "fpr95_strict": "NC-OOD's own FPR95: OOD scored strictly above the ID score at index round(0.05 n) "
                               "(ties never counted), for comparison with the paper",
               "fpr95_ood_positive": "fraction of ID rejected at the threshold catching 95% of OOD (OpenOOD v1.5)",
               "classifier": "probe: the layer's linear probe on the ID training features; model: the model's own "
                             "classifier; none: the scorer reads no classifier",
               "nc5": "mean over ID classes of |cos(ID training class mean, OOD set mean)| at the layer (Ammar et "
                      "al., ICLR 2024); 0 = orthogonal"}


def report_ood(cfg: Namespace, plan: OODPlan, result: OODResult) -> dict:
    columns = TABLE_COLUMNS[:3] + (["search"] if cfg.search else []) + TABLE_COLUMNS[3:]
    extra = {"conventions": CONVENTIONS, **({"benchmark": cfg.benchmark} if cfg.benchmark else {})}
    shown = [c for c in columns if c != "fpr95_strict"]
    paths = write_tables(cfg, result.rows, [*columns, "options", "note"], shown=shown, extra=extra)
    if cfg.search:
        search_cfg = Namespace(**{**vars(cfg), "out_name": f"{cfg.out_name}_search"})
        paths.update({f"search_{k}": v for k, v in
                      write_tables(search_cfg, result.search_rows, search_rows_columns()).items()})
    if cfg.save_scores:
        paths["scores"] = write_scores(result.scores, f"{cfg.out_dir}/{cfg.out_name}_scores.csv.gz")
    if cfg.histograms:
        for label in dict.fromkeys(key[2] for key in result.scores):
            panels = {f"{model} / {layer}" + (f" ({search})" if search else ""): scores
                      for (model, layer, name, search, _), scores in result.scores.items() if name == label}
            slug = label.replace(":", "_").replace(",", "_").replace("=", "")
            paths[f"png_{slug}"] = score_histograms(panels, f"{cfg.out_dir}/{cfg.out_name}_{slug}_hist.png",
                                                    xlabel=f"{label} score (higher = more in-distribution)")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return paths
