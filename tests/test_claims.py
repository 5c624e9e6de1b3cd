"""The paper's claims and the 2 x 2 ablation (study/claims.py) on hand-made summary tables, and
their files from summarize.py for one seed and over seeds."""
import json
import math

import numpy as np
import pytest

import summarize
from study.claims import ARMS, CLAIMS, ablation, claims_over_seeds, hooks_in, mean_ci, seed_claims
from core.errors import UserError
from study.summary import layer_table, training_curves


def row(model, layer, nc1, fpr, lp):
    return {"model": model, "layer": layer, "nc1": nc1, "fpr95_avg": fpr, "lp_acc_avg": lp}


def table(base_nc1=0.30, ours_nc1=0.40, proj_raw_nc1=0.10, proj_nc1=0.20, base_fpr=0.8, proj_fpr=0.6,
          base_lp=0.70, ours_lp=0.72, hook="encoder"):
    return [row("baseline", hook, base_nc1, base_fpr, base_lp),
            row("ours", hook, ours_nc1, 0.9, ours_lp),
            row("ours", "projector_raw", proj_raw_nc1, 0.99, 0.5),
            row("ours", "projector", proj_nc1, proj_fpr, 0.4)]


def test_mean_ci_is_student_t_with_n_minus_1_degrees_of_freedom():
    values = [0.1, 0.2, 0.15, 0.3, 0.05]
    mean, low, high = mean_ci(values)
    half = 2.7764451051977987 * np.std(values, ddof=1) / math.sqrt(5)   # t_{0.975, 4}
    assert mean == pytest.approx(0.16) and (low, high) == pytest.approx((0.16 - half, 0.16 + half))
    assert mean_ci([0.3]) == (0.3, None, None)
    assert mean_ci([0.2, 0.2, 0.2]) == (pytest.approx(0.2),) * 3


def test_seed_claims_read_each_side_at_its_layer():
    claims = seed_claims(table(), "encoder")
    assert [c["number"] for c in claims] == [1, 2, 3, 4] and [c["claim"] for c in claims] == [c[0] for c in CLAIMS]
    got = [(c["ours_label"], c["ours"], c["other_label"], c["other"], c["holds"]) for c in claims]
    assert got == [("ours encoder nc1", 0.40, "baseline encoder nc1", 0.30, True),          # higher NC1 wanted
                   ("ours projector_raw nc1", 0.10, "ours encoder nc1", 0.40, True),        # NC on the raw projector
                   ("ours projector fpr95_avg", 0.6, "baseline encoder fpr95_avg", 0.8, True),  # OOD normalized
                   ("ours encoder lp_acc_avg", 0.72, "baseline encoder lp_acc_avg", 0.70, True)]
    reversed_ = seed_claims(table(ours_nc1=0.2, ours_lp=0.6, proj_fpr=0.9), "encoder")
    assert [c["holds"] for c in reversed_] == [False, True, False, False]
    # without a raw projector row, NC1 of the projector is read on the normalized output, and says so
    old = [r for r in table() if r["layer"] != "projector_raw"]
    assert seed_claims(old, "encoder")[1]["ours_label"] == "ours projector nc1"
    with pytest.raises(UserError, match="last_conv"):
        seed_claims(table(), "last_conv")
    assert hooks_in([table(), table(hook="last_conv")]) == [] and hooks_in([table()]) == ["encoder"]


def test_claims_over_seeds_give_paired_differences_and_seed_counts():
    base = [0.30, 0.32, 0.28, 0.35, 0.31]
    gap = [0.05, -0.01, 0.03, 0.02, 0.04]
    tables = [table(base_nc1=b, ours_nc1=b + g) for b, g in zip(base, gap)]
    rows = claims_over_seeds(tables, ["encoder"])
    first = rows[0]
    assert (first["hook"], first["number"], first["seeds_holding"], first["seeds_run"], first["holds_in"]) == \
        ("encoder", 1, 4, 5, "4/5")
    assert first["ours_mean"] == pytest.approx(np.mean(base) + np.mean(gap))
    assert first["other_std"] == pytest.approx(np.std(base, ddof=1))
    mean, low, high = mean_ci(gap)   # the difference is paired: the seed-to-seed spread of base cancels
    assert (first["diff_mean"], first["diff_ci_low"], first["diff_ci_high"]) == pytest.approx((mean, low, high))
    assert low < 0 < high
    assert [r["holds_in"] for r in rows[1:]] == ["5/5"] * 3


def arm_tables(effect_entropy, effect_projector, interaction, noise, seeds=6, hook="encoder"):
    rng = np.random.default_rng(0)
    tables = []
    for _ in range(seeds):
        offset = rng.normal(0, 0.1)   # shared by the arms of a seed
        rows = []
        for arm, (e, p) in ARMS.items():
            value = 1.0 + offset + effect_entropy * e + effect_projector * p + interaction * e * p
            value += rng.normal(0, noise)
            rows.append(row(arm, hook, value, value, value))
            if p:
                rows += [row(arm, "projector_raw", 0.01, 0.5, 0.5), row(arm, "projector", 0.02, 0.5, 0.5)]
        tables.append(rows)
    return tables


def test_ablation_separates_main_effects_and_interaction():
    exact = ablation(arm_tables(0.3, -0.5, 0.2, noise=0.0), ["encoder"])
    assert [r["metric"] for r in exact] == ["nc1", "lp_acc_avg", "fpr95_avg"]
    r = exact[0]
    # main effect = the ingredient's change averaged over the other's two levels
    assert (r["entropy_effect"], r["projector_effect"], r["interaction_effect"]) == pytest.approx((0.4, -0.4, 0.2))
    assert r["baseline_mean"] + 0.3 - 0.5 + 0.2 == pytest.approx(r["ours_mean"])
    noisy = ablation(arm_tables(0.3, 0.0, 0.0, noise=0.01, seeds=8), ["encoder"])[0]
    assert noisy["entropy_ci_low"] > 0 and noisy["projector_ci_low"] < 0 < noisy["projector_ci_high"]
    assert noisy["interaction_ci_low"] < 0 < noisy["interaction_ci_high"]
    with pytest.raises(UserError, match="four arms"):
        ablation([table()], ["encoder"])


# --------------------------------------------------------------------------- files from summarize.py

def write_results(folder, values, hooks=("encoder",)):
    """nc.json, ood.json, linear_probe.json as the evaluators write them; values[(model, layer)] = (nc1, fpr, lp)."""
    folder.mkdir(parents=True, exist_ok=True)
    nc, ood, lp = [], [], []
    for depth, ((model, layer), (nc1, fpr, acc)) in enumerate(values.items()):
        nc.append({"model": model, "layer": layer, "split": "train", "depth": depth, "nc1": nc1, "vci": 0.2})
        ood += [{"model": model, "layer": layer, "scorer": "energy", "ood": o, "fpr95": fpr, "id_acc": 0.9}
                for o in ("near", "average")]
        lp += [{"model": model, "layer": layer, "dataset": d, "best_acc": acc} for d in ("digits", "average")]
    for name, rows in (("nc", nc), ("ood", ood), ("linear_probe", lp)):
        (folder / f"{name}.json").write_text(json.dumps({"rows": rows}))


def seed_values(seed, arms=ARMS):
    rng = np.random.default_rng(seed)
    values = {}
    for arm, (e, p) in arms.items():
        for hook in ("last_conv", "encoder"):
            values[(arm, hook)] = (0.3 + 0.1 * e - 0.05 * p + rng.normal(0, 0.01), 0.8 - 0.05 * e, 0.7 + 0.02 * e)
        if p:
            values[(arm, "projector_raw")] = (0.05, 0.7, 0.6)
            values[(arm, "projector")] = (0.08, 0.6, 0.55)
    return values


def write_log(folder, model, epochs=4, with_projector=False):
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for e in range(1, epochs + 1):
        record = {"epoch": e, "train_acc1": 0.5 + 0.1 * e, "val_acc1": 0.5 + 0.09 * e, "clean_train_acc1": 0.5 + 0.1 * e,
                  "nc1/encoder": 1.0 / e, "nc1/last_conv": 1.2 / e}
        if with_projector:
            record.update({"nc1/projector_raw": 0.5 / e, "nc1/projector": 0.6 / e})
        lines.append(json.dumps(record))
    (folder / f"{model}.log.jsonl").write_text("\n".join(lines) + "\n")


def test_one_seed_prints_the_claims_in_words_and_writes_four_of_them(tmp_path, capsys):
    arms = {k: ARMS[k] for k in ("baseline", "ours")}
    write_results(tmp_path / "res", seed_values(0, arms))
    for arm, (_, p) in arms.items():
        write_log(tmp_path / "runs", arm, with_projector=bool(p))
    table = summarize.main(["--results", str(tmp_path / "res"), "--runs", str(tmp_path / "runs")])
    assert {(r["model"], r["layer"]) for r in table} == {("baseline", "last_conv"), ("baseline", "encoder"),
                                                         ("ours", "last_conv"), ("ours", "encoder"),
                                                         ("ours", "projector_raw"), ("ours", "projector")}
    out = capsys.readouterr().out
    assert "at last_conv (the paper's hook point)" in out and "at encoder (the pooled embedding)" in out
    assert out.count("(1) holds: entropy regularization leaves the encoder less collapsed") == 2
    claims = json.loads((tmp_path / "res" / "claims.json").read_text())
    assert len(claims) == 4 and {c["hook"] for c in claims} == {"last_conv"}
    for c in claims:
        assert {"claim", "ours", "other", "holds"} <= set(c) and isinstance(c["holds"], bool)
        assert c["holds"] == ((c["ours"] > c["other"]) if c["op"] == ">" else (c["ours"] < c["other"]))
    curves = json.loads((tmp_path / "res" / "curves.json").read_text())["models"]
    assert [r["nc1/encoder"] for r in curves["baseline"]] == [1.0, 0.5, 1 / 3, 0.25]
    assert (tmp_path / "res" / "nc1_over_training.png").stat().st_size > 10_000


def test_over_seeds_writes_claims_the_2x2_and_the_bands(tmp_path, capsys):
    dirs = []
    for seed in range(3):   # what summarize.py --results --runs writes for each seed (tested above)
        folder = tmp_path / f"seed{seed}"
        write_results(folder, seed_values(seed))
        nc, ood, lp = (json.loads((folder / f"{n}.json").read_text())["rows"] for n in ("nc", "ood", "linear_probe"))
        (folder / "summary.json").write_text(json.dumps(layer_table(nc, ood, lp)))
        for arm, (_, p) in ARMS.items():
            write_log(tmp_path / f"runs{seed}", arm, with_projector=bool(p))
        curves = training_curves(tmp_path / f"runs{seed}", list(ARMS))
        (folder / "curves.json").write_text(json.dumps({"models": curves}))
        dirs.append(str(folder))
    rows = summarize.main(["--seeds", *dirs, "--out_dir", str(tmp_path / "all")])
    assert [(r["hook"], r["number"]) for r in rows] == [(h, n) for h in ("last_conv", "encoder") for n in (1, 2, 3, 4)]
    written = json.loads((tmp_path / "all" / "claims.json").read_text())
    assert written["rows"] == json.loads(json.dumps(rows)) and written["hooks"] == ["last_conv", "encoder"]
    header = (tmp_path / "all" / "claims.csv").read_text().splitlines()[0].split(",")
    assert {"ours_mean", "ours_std", "other_mean", "other_std", "diff_mean", "diff_ci_low", "diff_ci_high",
            "holds_in"} <= set(header)
    effects = json.loads((tmp_path / "all" / "ablation.json").read_text())["rows"]
    nc1 = next(r for r in effects if r["hook"] == "encoder" and r["metric"] == "nc1")
    assert nc1["entropy_effect"] == pytest.approx(0.1, abs=0.02) and nc1["projector_effect"] == pytest.approx(-0.05, abs=0.02)
    assert (tmp_path / "all" / "ablation.md").read_text().startswith("|")
    assert (tmp_path / "all" / "nc1_over_training.png").stat().st_size > 10_000
    out = capsys.readouterr().out
    assert "holds in 3/3 seeds" in out and "The 2 x 2" in out


def test_over_seeds_without_both_sides_is_one_clear_error(tmp_path):
    write_results(tmp_path / "s0", {("baseline", "encoder"): (0.3, 0.8, 0.7)})
    summarize.main(["--results", str(tmp_path / "s0")])
    with pytest.raises(SystemExit):
        summarize.main(["--seeds", str(tmp_path / "s0"), "--out_dir", str(tmp_path / "all")])


# --------------------------------------------------------------------------- several folders: the paper chain

def write_model(folder, model, layers, sha=None, ood_layers=None, lp_layers=None, nc1=0.3):
    """One model's nc.json, ood.json and linear_probe.json as the paper chain writes them (one folder per
    model); ``layers`` per task; ``sha``: the checkpoint record, one value or {task: value}."""
    folder.mkdir(parents=True, exist_ok=True)
    tasks = {"nc": layers, "ood": ood_layers or layers, "linear_probe": lp_layers or layers}
    for task, task_layers in tasks.items():
        rows = []
        for depth, layer in enumerate(task_layers):
            if task == "nc":
                rows.append({"model": model, "layer": layer, "split": "train", "depth": depth, "nc1": nc1 / (depth + 1),
                             "vci": 0.2})
            elif task == "ood":
                rows += [{"model": model, "layer": layer, "scorer": "energy", "ood": o, "fpr95": 0.5 + 0.1 * depth,
                          "id_acc": 0.8} for o in ("ninco", "average")]
            else:
                rows += [{"model": model, "layer": layer, "dataset": d, "best_acc": 0.6 - 0.1 * depth}
                         for d in ("cub200", "average")]
        content = {"rows": rows}
        digest = sha.get(task) if isinstance(sha, dict) else sha
        if digest is not None:
            content["checkpoints"] = {model: {"path": f"/ckpt/{model}-{digest}.pth", "sha256": digest * 16}}
        (folder / f"{task}.json").write_text(json.dumps(content))


def paper_folders(tmp_path, sha="abcd"):
    """A CNN pair as the paper scripts evaluate it (NC and transfer at projector_raw, OOD at projector) and a ViT pair."""
    folders = []
    for arch, hook in (("resnet18", "last_conv"), ("vit_tiny", "encoder")):
        raw = "projector_raw" if hook == "last_conv" else "projector"
        for variant, nc1 in (("baseline", 0.3), ("nc", 0.5)):
            name = f"{arch}_in100_{variant}"
            extra = [raw] if variant == "nc" else []
            ood_extra = ["projector"] if variant == "nc" else []
            write_model(tmp_path / name, name, [hook, *extra], sha, ood_layers=[hook, *ood_extra], nc1=nc1)
            folders.append(str(tmp_path / name))
    return folders


def test_several_folders_make_one_table_with_every_column_and_the_claims_of_each_pair(tmp_path, capsys):
    folders = paper_folders(tmp_path)
    table = summarize.main(["--results", *folders, "--out_dir", str(tmp_path / "paper")])
    assert [(r["model"], r["layer"]) for r in table] == [
        ("resnet18_in100_baseline", "last_conv"), ("resnet18_in100_nc", "last_conv"), ("resnet18_in100_nc", "projector"),
        ("vit_tiny_in100_baseline", "encoder"), ("vit_tiny_in100_nc", "encoder"), ("vit_tiny_in100_nc", "projector")]
    for row in table:
        assert set(row) == {"model", "layer", "depth", "id_acc", "nc1", "vci", "fpr95_ninco", "fpr95_avg", "lp_cub200",
                            "lp_acc_avg"} and None not in row.values()
    cnn_projector = table[2]   # NC1 and transfer before the L2 normalization, OOD after it
    assert (cnn_projector["nc1"], cnn_projector["lp_acc_avg"], cnn_projector["fpr95_avg"]) == (0.25, 0.5, 0.6)
    claims = json.loads((tmp_path / "paper" / "claims.json").read_text())
    assert [(c["pair"], c["number"], c["hook"]) for c in claims] == [
        (pair, n, hook) for pair, hook in (("resnet18_in100", "last_conv"), ("vit_tiny_in100", "encoder"))
        for n in (1, 2, 3, 4)]
    assert claims[1]["ours_label"] == "resnet18_in100_nc projector nc1" and claims[1]["ours"] == 0.25
    assert claims[2]["other_label"] == "resnet18_in100_baseline last_conv fpr95_avg"
    out = capsys.readouterr().out
    assert "The paper's claims for resnet18_in100 (resnet18_in100_nc vs resnet18_in100_baseline)" in out
    for name in ("summary.md", "nc1_vs_fpr95.png", "nc1_vs_transfer.png", "summary_by_layer.png"):
        assert (tmp_path / "paper" / name).stat().st_size > 0


def test_results_of_one_model_from_two_checkpoints_are_refused_naming_both_files(tmp_path, capsys):
    write_model(tmp_path / "m", "resnet18_in100_nc", ["last_conv"], sha={"nc": "aaaa", "ood": "aaaa",
                                                                         "linear_probe": "bbbb"})
    with pytest.raises(SystemExit) as exit_:
        summarize.main(["--results", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1
    assert str(tmp_path / "m" / "nc.json") in err and str(tmp_path / "m" / "linear_probe.json") in err
    # older files that record no checkpoint are taken as they are, beside ones that do
    write_model(tmp_path / "old", "resnet18_in100_nc", ["last_conv"], sha={"nc": "aaaa"})
    assert len(summarize.main(["--results", str(tmp_path / "old")])) == 1


def test_a_model_in_two_folders_or_several_folders_without_out_dir_are_refused(tmp_path, capsys):
    write_model(tmp_path / "a", "resnet18_in100_nc", ["last_conv"])
    write_model(tmp_path / "b", "resnet18_in100_nc", ["last_conv"])
    for argv in (["--results", str(tmp_path / "a"), str(tmp_path / "b"), "--out_dir", str(tmp_path / "t")],
                 ["--results", str(tmp_path / "a"), str(tmp_path / "b")]):
        with pytest.raises(SystemExit):
            summarize.main(argv)
    first, second = capsys.readouterr().err.splitlines()
    assert str(tmp_path / "a" / "nc.json") in first and str(tmp_path / "b" / "nc.json") in first
    assert "--out_dir" in second
