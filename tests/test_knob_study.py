"""The control-knob study (study/knob.py) on hand-made summaries of three seeds."""
import json

import pytest
from scipy import stats

from core.errors import UserError
from study.knob import (
    diagnostics_table,
    load_seeds,
    model_name,
    pairings,
    parse_name,
    smallest_alpha,
    summarize_knob,
    sweep_table,
)

ALPHAS = ("0", "0.05", "0.2", "1.0")


def seed_folder(tmp_path, seed):
    """Encoder NC1 falls with the projector and rises with alpha; the GN models shift everything."""
    folder = tmp_path / f"seed{seed}"
    folder.mkdir()
    summary, probe, nc, ood = [], [], [], []
    models = [(a, p, "bn") for a in ALPHAS for p in (False, True)] + [("0", False, "gn_ws"), ("0.05", True, "gn_ws")]
    for alpha, projector, norm in models:
        name = model_name(alpha, projector, norm)
        shift = 0.01 * seed + (0.05 if norm == "gn_ws" else 0.0)
        nc1 = 0.3 + 0.2 * float(alpha) - (0.12 if projector else 0.0) + shift
        layers = ["last_conv", "encoder"] + (["projector_raw", "projector"] if projector else [])
        for layer in layers:
            summary.append({"model": name, "layer": layer, "nc1": nc1 if layer != "projector_raw" else nc1 / 2,
                            "fpr95_avg": 0.7 - 0.1 * projector + 0.01 * seed, "lp_acc_avg": 0.7 + 0.05 * float(alpha),
                            "vci": 0.1})
            for split in ("train", "test"):  # the test split less collapsed, its NCC accuracy lower
                nc.append({"model": name, "split": split, "layer": layer, "nc1": nc1 * (1.5 if split == "test" else 1),
                           "ncc_acc": 0.95 - 0.1 * (split == "test") - 0.01 * seed})
            for label, nc5 in (("near", 0.2 + 0.1 * seed), ("far", 0.4), ("average", 0.3 + 0.05 * seed)):
                ood.append({"model": name, "layer": layer, "scorer": "energy", "ood": label, "nc5": nc5 + projector})
                ood.append({"model": name, "layer": layer, "scorer": "knn", "ood": label, "nc5": 9.0})
        probe.append({"model": name, "dataset": "average", "layer": "encoder", "id_acc": 0.9 - 0.01 * float(alpha)})
    (folder / "nc.json").write_text(json.dumps({"rows": nc}))
    (folder / "ood.json").write_text(json.dumps({"rows": ood}))
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "linear_probe.json").write_text(json.dumps({"rows": probe}))
    return folder


def test_names_round_trip():
    assert parse_name(model_name("0.05", True, "gn_ws")) == (0.05, True, "gn_ws")
    assert parse_name(model_name("1.0", False)) == (1.0, False, "bn") and parse_name("baseline") is None


def test_table_intervals_claim_one_and_pairings(tmp_path):
    folders = [seed_folder(tmp_path, s) for s in range(3)]
    seeds = load_seeds(folders)
    table = sweep_table(seeds)
    assert [(r["alpha"], r["projector"]) for r in table] == [(float(a), p) for a in ALPHAS for p in ("off", "on")]
    row = next(r for r in table if r["alpha"] == 0.2 and r["projector"] == "on")
    values = [0.3 + 0.04 - 0.12 + 0.01 * s for s in range(3)]
    low, high = stats.t.interval(0.95, 2, loc=sum(values) / 3, scale=stats.sem(values))
    assert row["nc1_encoder"] == pytest.approx(sum(values) / 3)
    assert (row["nc1_encoder_low"], row["nc1_encoder_high"]) == pytest.approx((low, high))
    assert row["nc1_projector"] == pytest.approx(sum(values) / 6)
    assert row["fpr95"] == pytest.approx(0.61) and row["id_acc"] == pytest.approx(0.898)
    # claim (1): 0.2 alpha - 0.12 > 0 from alpha 1.0 on (0.05: -0.11, 0.2: -0.08); a constant difference
    assert row["claim1_diff_encoder"] == pytest.approx(-0.08) and row["claim1_holds_encoder"] == "0/3"
    assert smallest_alpha(table, "encoder") == 1.0
    rows = pairings(seeds)
    assert {r["pairing"] for r in rows} == {"batchnorm", "official", "groupnorm"}
    official = next(r for r in rows if r["pairing"] == "official" and r["hook"] == "encoder" and r["number"] == 1)
    assert official["diff_mean"] == pytest.approx(0.3 + 0.01 - 0.12 + 0.05 - 0.3)  # GN shifts ours only
    summarize_knob(folders, tmp_path / "out")
    for name in ("knob.json", "knob.md", "knob.png", "pairings.json", "diagnostics.md"):
        assert (tmp_path / "out" / name).is_file(), name


def test_diagnostics_are_test_split_nc_ncc_accuracy_and_nc5_of_the_scored_layer(tmp_path):
    folders = [seed_folder(tmp_path, s) for s in range(3)]
    rows = diagnostics_table(folders, [model_name("0.2", True), model_name("0", False)])
    on, off = rows
    train_nc1 = [0.3 + 0.04 - 0.12 + 0.01 * s for s in range(3)]
    assert on["nc1_test_encoder"] == pytest.approx(1.5 * sum(train_nc1) / 3)
    assert on["ncc_train_encoder"] == pytest.approx(0.94) and on["ncc_test_last_conv"] == pytest.approx(0.84)
    low, high = stats.t.interval(0.95, 2, loc=0.84, scale=stats.sem([0.85, 0.84, 0.83]))
    assert (on["ncc_test_encoder_low"], on["ncc_test_encoder_high"]) == pytest.approx((low, high))
    # NC5: the energy rows' average over OOD sets, at the projector when on and last_conv when off
    assert (on["nc5_layer"], off["nc5_layer"]) == ("projector", "last_conv")
    assert on["nc5"] == pytest.approx(1.35) and off["nc5"] == pytest.approx(0.35)


def test_diagnostics_need_the_evaluators_files(tmp_path):
    folder = seed_folder(tmp_path, 0)
    (folder / "nc.json").unlink()
    with pytest.raises(UserError, match="nc.json is missing"):
        diagnostics_table([folder], [model_name("0", False)])
