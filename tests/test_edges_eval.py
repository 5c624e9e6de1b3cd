"""The evaluators at the edges: one evaluator per result set, images changed behind the feature
cache, result files that name their checkpoints, reruns that replace their whole output set, and
the operating system refusing a write."""
import collections
import errno
import json
import os
import shutil

import pytest
import torch

import eval_nc
import eval_ood
import train_lp
from core.checkpoint import file_hash, save_checkpoint
from edges import EVAL, error_line, files, held_elsewhere, read_only, write_images
from features.cache import FeatureCache


def nc_args(ckpts, tmp_path, *more):
    return ["--ckpt", str(ckpts["base"]), "--cache_dir", str(tmp_path / "cache"), "--out_dir", str(tmp_path / "out"),
            *EVAL, *more]


# --------------------------------------------------------------------------- 1. one evaluator per result set

def test_an_evaluator_holds_its_results_from_its_start_and_a_second_one_is_refused(capsys, tmp_path, tiny_ckpts,
                                                                                    monkeypatch):
    seen = []
    get = FeatureCache.get

    def spy(self, *args, **kwargs):  # the lock is held while the features are extracted
        seen.append(json.loads((tmp_path / "out" / ".nc.lock").read_text())["pid"])
        return get(self, *args, **kwargs)

    monkeypatch.setattr(FeatureCache, "get", spy)
    eval_nc.main(nc_args(tiny_ckpts, tmp_path))
    assert seen and set(seen) == {os.getpid()} and not (tmp_path / "out" / ".nc.lock").exists()
    monkeypatch.undo()
    with held_elsewhere(tmp_path / "out", "nc", "evaluation writing its nc results", "--out_dir") as holder:
        before = {name: (tmp_path / "out" / name).read_bytes() for name in ("nc.json", "nc.csv")}
        line = error_line(capsys, eval_nc.main, nc_args(tiny_ckpts, tmp_path))
        assert line.startswith(f"error: --out_dir {tmp_path / 'out'} is in use by another evaluation writing its nc "
                               f"results (pid {holder.pid} on ")
        assert "pass another --out_dir or --out_name" in line
        assert before == {name: (tmp_path / "out" / name).read_bytes() for name in before}
        eval_nc.main(nc_args(tiny_ckpts, tmp_path, "--out_name", "nc_again"))  # another result set is no conflict
    assert (tmp_path / "out" / "nc_again.json").is_file()


# --------------------------------------------------------------------------- 2. images changed behind the cache

def test_images_overwritten_in_place_miss_the_cache(tmp_path, tiny_ckpts):
    from PIL import Image

    images = write_images(tmp_path / "ood", {"": {"x": 8, "y": 8}}, size=16)
    args = ["--ckpt", str(tiny_ckpts["ours"]), "--ood", f"noise=imagefolder:root={tmp_path / 'ood'}", "--layers",
            "projector", "--no-histograms", "--cache_dir", str(tmp_path / "cache"), "--out_dir",
            str(tmp_path / "out"), *EVAL]
    noise = eval_ood.main(args)[0]
    entries = set(os.listdir(tmp_path / "cache"))
    assert eval_ood.main(args)[0]["auroc"] == noise["auroc"] and set(os.listdir(tmp_path / "cache")) == entries
    for path in images:  # the same names and labels, other pixels
        Image.new("RGB", (16, 16)).save(path)
    black = eval_ood.main(args)[0]
    assert black["auroc"] != noise["auroc"]
    new = set(os.listdir(tmp_path / "cache")) - entries
    assert len(new) == 1  # the OOD set's entry only: the ID data did not change
    meta = json.loads((tmp_path / "cache" / new.pop() / "meta.json").read_text())
    assert meta["dataset"]["name"] == "imagefolder" and len(meta["dataset_files"]) == 64  # the fingerprint


# --------------------------------------------------------------------------- 3. result files name their checkpoints

def test_every_result_file_records_the_content_hash_of_its_checkpoints(tmp_path, tiny_ckpts):
    ckpts = ["--ckpt", str(tiny_ckpts["base"]), str(tiny_ckpts["ours"]), "--names", "base", "ours"]
    common = [*ckpts, "--cache_dir", str(tmp_path / "cache"), "--out_dir", str(tmp_path / "out"), *EVAL]
    eval_nc.main([*common, "--layers", "encoder"])
    eval_ood.main([*common, "--ood", "digits", "--no-histograms"])
    train_lp.main([*common, "--transfer", "digits", "--layers", "encoder"])
    expected = {name: {"path": str(tiny_ckpts[key].resolve()), "sha256": file_hash(tiny_ckpts[key])}
                for name, key in (("base", "base"), ("ours", "ours"))}
    for result in ("nc.json", "ood.json", "linear_probe.json"):
        assert json.loads((tmp_path / "out" / result).read_text())["checkpoints"] == expected, result


# --------------------------------------------------------------------------- 4. a rerun replaces its output set

def test_a_rerun_replaces_its_whole_output_set_and_nothing_else(tmp_path, tiny_ckpts):
    out = tmp_path / "out"
    common = ["--ckpt", str(tiny_ckpts["base"]), "--ood", "digits", "--layers", "encoder", "--cache_dir",
              str(tmp_path / "cache"), "--out_dir", str(out), *EVAL]
    eval_nc.main(nc_args(tiny_ckpts, tmp_path, "--layers", "encoder"))
    (out / "notes.txt").write_text("mine")
    eval_ood.main([*common, "--scorers", "energy"])
    assert (out / "ood_energy_hist.png").is_file()
    nc_files = {name: (out / name).read_bytes() for name in ("nc.json", "nc.png", "nc.config.yaml")}
    eval_ood.main([*common, "--scorers", "msp"])
    assert not (out / "ood_energy_hist.png").exists() and (out / "ood_msp_hist.png").is_file()
    assert json.loads((out / ".ood.outputs.json").read_text())["files"] == [
        "ood.json", "ood.csv", "ood.md", "ood.config.yaml", "ood_msp_hist.png"]
    assert nc_files == {name: (out / name).read_bytes() for name in nc_files}
    assert (out / "notes.txt").read_text() == "mine"


# --------------------------------------------------------------------------- 6. the operating system says no

def test_a_read_only_out_dir_or_one_that_is_a_file_is_one_line_before_any_extraction(capsys, tmp_path, tiny_ckpts,
                                                                                      monkeypatch):
    with read_only(tmp_path / "ro", monkeypatch) as folder:
        line = error_line(capsys, eval_nc.main, nc_args(tiny_ckpts, tmp_path)[:-len(EVAL) - 2] +
                          ["--out_dir", str(folder), *EVAL])
    assert line.startswith(f"error: cannot write in --out_dir {folder}: Permission denied (EACCES)")
    (tmp_path / "file").write_text("x")
    line = error_line(capsys, eval_nc.main, [*nc_args(tiny_ckpts, tmp_path), "--out_dir", str(tmp_path / "file")])
    assert line == f"error: --out_dir {tmp_path / 'file'} is a file, not a folder; move it or pass another --out_dir"
    line = error_line(capsys, eval_nc.main, [*nc_args(tiny_ckpts, tmp_path), "--out_dir", str(tmp_path / "file" / "x")])
    assert line.startswith(f"error: cannot create --out_dir {tmp_path / 'file' / 'x'}: Not a directory (ENOTDIR)")
    assert not (tmp_path / "cache").exists()


def test_a_read_only_cache_dir_is_one_line(capsys, tmp_path, tiny_ckpts, monkeypatch):
    with read_only(tmp_path / "ro", monkeypatch) as folder:
        line = error_line(capsys, eval_nc.main, [*nc_args(tiny_ckpts, tmp_path), "--cache_dir", str(folder)])
    assert line.startswith(f"error: cannot write the feature cache in {folder}: Permission denied (EACCES)")


Usage = collections.namedtuple("Usage", "total used free")


@pytest.mark.parametrize("full", ["free space", "allocation"])
def test_a_full_disk_under_the_cache_is_one_line_and_leaves_no_partial_entry(capsys, tmp_path, tiny_ckpts,
                                                                             monkeypatch, full):
    if full == "free space":
        monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(1 << 20, 1 << 20, 1024))
        shown = "MiB but 0.0 MiB are free (ENOSPC)"
    else:  # the free space was there when checked, but not when the file's blocks were allocated
        def no_room(fd, offset, length):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        monkeypatch.setattr(os, "posix_fallocate", no_room)
        shown = "No space left on device (ENOSPC)"
    line = error_line(capsys, eval_nc.main, nc_args(tiny_ckpts, tmp_path))
    assert f"the feature cache {tmp_path / 'cache'}" in line or f"feature cache in {tmp_path / 'cache'}" in line
    assert shown in line
    assert files(tmp_path / "cache") == []  # neither an entry nor its temporary folder


# --------------------------------------------------------------------------- 8. messages that name the checkpoint

def test_a_checkpoint_with_non_finite_weights_is_named_before_any_extraction(capsys, tmp_path):
    from models import build_model

    model = build_model("resnet18", 6, stem="cifar", width=0.125, img_size=16)
    ckpt = save_checkpoint(tmp_path / "nan.pth", model=model, epoch=1, config={})
    state = torch.load(ckpt, weights_only=True)
    state["state_dict"]["classifier.weight"][0, 0] = float("nan")
    torch.save(state, ckpt)
    line = error_line(capsys, eval_nc.main, ["--ckpt", str(ckpt), "--cache_dir", str(tmp_path / "cache"),
                                             "--out_dir", str(tmp_path / "out"), *EVAL])
    assert line.startswith(f"error: checkpoint {ckpt} holds non-finite values in classifier.weight")
    assert "feature extraction" not in line and not (tmp_path / "cache").exists()
