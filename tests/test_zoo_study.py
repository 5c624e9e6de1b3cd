"""The detector zoo over seeds (study/zoo.py) on hand-made eval_ood.py result files."""
import json

import pytest
from scipy import stats

from study.zoo import load_seeds, ranking, summarize_zoo, verdict, zoo_table


def seed_file(tmp_path, seed, values):
    """values: {(model, layer, scorer): (fpr95, auroc)} -> an ood.json with per-set and average rows."""
    rows = []
    for (model, layer, scorer), (fpr, auroc) in values.items():
        rows.append({"model": model, "layer": layer, "scorer": scorer, "ood": "digits", "fpr95": fpr, "auroc": auroc})
        rows.append({"model": model, "layer": layer, "scorer": scorer, "ood": "average", "fpr95": fpr, "auroc": auroc})
    path = tmp_path / f"seed{seed}.json"
    path.write_text(json.dumps({"rows": rows}))
    return path


def make_seeds(tmp_path):
    files = []
    for seed, shift in enumerate((0.00, 0.02, -0.01)):
        files.append(seed_file(tmp_path, seed, {
            ("baseline", "last_conv", "energy"): (0.70 + shift, 0.80), ("baseline", "encoder", "energy"): (0.75, 0.78),
            ("ours", "last_conv", "energy"): (0.60 + shift, 0.85 + shift), ("ours", "encoder", "energy"): (0.76, 0.77),
            ("ours", "projector", "energy"): (0.50 + 2 * shift, 0.90),
            ("baseline", "last_conv", "knn"): (0.65, 0.82 + shift), ("baseline", "encoder", "knn"): (0.66, 0.81),
            ("ours", "last_conv", "knn"): (0.66 + shift, 0.81), ("ours", "encoder", "knn"): (0.67, 0.80),
        }))
    return files


def test_paired_differences_intervals_and_verdicts(tmp_path):
    table = zoo_table(load_seeds(make_seeds(tmp_path)))
    keys = [(r["scorer"], r["layer"]) for r in table]
    assert keys == [("energy", "last_conv"), ("energy", "encoder"), ("energy", "projector"), ("knn", "last_conv"),
                    ("knn", "encoder")]  # no projector for knn in ours: no row
    proj = table[2]
    assert proj["baseline_layer"] == "last_conv"
    diffs = [0.50 - 0.70, 0.54 - 0.72, 0.48 - 0.69]
    mean = sum(diffs) / 3
    low, high = stats.t.interval(0.95, 2, loc=mean, scale=stats.sem(diffs))
    assert proj["diff_fpr95"] == pytest.approx(mean) and (proj["diff_fpr95_low"], proj["diff_fpr95_high"]) == \
        pytest.approx((low, high))
    assert proj["ours_better_fpr95"] == "3/3" and verdict(proj, "fpr95") == "helps"
    same = table[0]  # energy at last_conv: the same shift in both models, a constant difference of -0.10
    assert same["diff_fpr95_low"] == same["diff_fpr95_high"] == pytest.approx(-0.10)
    encoder = table[1]
    assert encoder["diff_fpr95"] == pytest.approx(0.01) and verdict(encoder, "fpr95") == "hurts"
    assert verdict(table[3], "auroc") == "no clear effect"


def test_ranking_and_files(tmp_path):
    files = make_seeds(tmp_path)
    ranked = ranking(load_seeds(files))
    best = [r for r in ranked if r["model"] == "ours" and r["rank"] == 1][0]
    assert (best["scorer"], best["layer"]) == ("energy", "projector")
    summarize_zoo(files, tmp_path / "out")
    for name in ("zoo.json", "zoo.csv", "zoo.md", "zoo_ranking.json", "zoo.png"):
        assert (tmp_path / "out" / name).is_file(), name
    with pytest.raises(Exception, match="missing"):
        load_seeds([tmp_path / "nowhere.json"])


def test_summarize_zoo_entry_point(tmp_path):
    import summarize

    table = summarize.main(["--zoo", *map(str, make_seeds(tmp_path)), "--out_dir", str(tmp_path / "z")])
    assert {(r["scorer"], r["layer"]) for r in table} >= {("energy", "projector"), ("knn", "encoder")}
    assert (tmp_path / "z" / "zoo.md").is_file()
