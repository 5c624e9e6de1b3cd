"""Bootstrap replicates of the evaluators' figures (evaluate/bootstrap.py): each replicate equals the
figure recomputed by its own formula on the resampled samples."""
import numpy as np
import pytest
import torch

from evaluate.bootstrap import class_resamples, resamples
from metrics.nc import nc1_replicates, nc_metrics
from ood import detection_metrics
from ood.metrics import fpr95_replicates


def test_resamples_are_reproducible_per_key_and_stratified_ones_keep_every_class():
    a, b = resamples(50, 7, 0, "digits/test"), resamples(50, 7, 0, "digits/test")
    assert a.shape == (7, 50) and np.array_equal(a, b) and not np.array_equal(a, resamples(50, 7, 0, "near/test"))
    labels = np.repeat(np.arange(4), [3, 5, 7, 9])
    idx = class_resamples(labels, 20, 1, "id/train")
    for row in idx:
        assert np.array_equal(np.bincount(labels[row], minlength=4), [3, 5, 7, 9])
        assert all(labels[i] == labels[j] for i, j in zip(row, range(len(labels))))  # each position within its class


@pytest.mark.parametrize("dim, classes", [(12, 4), (3, 6)])  # D above and below C - 1
def test_nc1_replicates_equal_nc1_of_each_resample(dim, classes):
    g = torch.Generator().manual_seed(dim)
    labels = torch.arange(classes).repeat_interleave(25)
    x = 3.0 * torch.randn(classes, dim, generator=g, dtype=torch.float64)[labels] + \
        torch.randn(len(labels), dim, generator=g, dtype=torch.float64) + 100.0  # a large common offset
    idx = class_resamples(labels.numpy(), 6, 0, "k")
    idx[0] = np.arange(len(labels))  # the identity resample: the figure itself
    got = nc1_replicates(x, labels, classes, idx)
    for b, rows in enumerate(idx):
        want = nc_metrics(x[rows], labels[rows], classes)["nc1"]
        assert got[b] == pytest.approx(want, rel=1e-9)
    assert len(set(got.tolist())) == len(got)


def test_fpr95_replicates_equal_the_detection_metric_of_each_resample_ties_included():
    rng = np.random.default_rng(0)
    ids = np.round(rng.normal(2.0, 1.0, 97), 1)   # rounded: many ties, at the threshold too
    ood = np.round(rng.normal(0.0, 1.0, 61), 1)
    id_idx, ood_idx = resamples(97, 30, 0, "id"), resamples(61, 30, 0, "ood")
    got = fpr95_replicates(ids, ood, id_idx, ood_idx)
    want = [detection_metrics(ids[i], ood[j])["fpr95"] for i, j in zip(id_idx, ood_idx)]
    np.testing.assert_array_equal(got, want)


def test_the_evaluators_write_replicates_that_pair_up_across_layers(tmp_path, tiny_ckpts):
    import eval_nc
    import eval_ood
    import train_lp

    common = ["--ckpt", str(tiny_ckpts["ours"]), "--layers", "encoder", "projector", "--max_per_class", "10",
              "--image_size", "16", "--probe_epochs", "2", "--device", "cpu", "--cache_dir", str(tmp_path / "c"),
              "--out_dir", str(tmp_path / "o"), "--bootstrap", "5"]
    nc = eval_nc.main(common)
    assert all(len(r["nc1_boot"]) == 5 for r in nc)
    ood = eval_ood.main([*common, "--ood", "digits", "textures", "--no-histograms"])
    per_set = [r for r in ood if r["ood"] != "average" and r["layer"] == "encoder"]
    average = next(r for r in ood if r["ood"] == "average" and r["layer"] == "encoder")
    assert average["fpr95_boot"] == pytest.approx(np.mean([r["fpr95_boot"] for r in per_set], axis=0).tolist())
    lp = train_lp.main([*common, "--transfer", "digits", "--out_name", "lp"])
    assert all(len(r["best_acc_boot"]) == 5 and all(0 <= v <= 1 for v in r["best_acc_boot"]) for r in lp)
    assert "fpr95_boot" not in (tmp_path / "o" / "ood.csv").read_text()  # replicates live in the JSON only
    none = eval_nc.main([*common[:-2], "--bootstrap", "0", "--out_name", "plain"])
    assert not any("nc1_boot" in r for r in none)
