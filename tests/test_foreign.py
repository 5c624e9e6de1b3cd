"""Models the toolkit did not train: checkpoints of the official NC-OOD code (built here in its
layout and wrapping, tests/official_models.py), a torchvision ResNet state_dict and a timm ViT
state_dict are converted on load, evaluated by eval_nc.py / eval_ood.py / train_lp.py, and their
features are those of the original modules on the same images; the converter writes checkpoints
pretrain.py starts from; unreadable files are one-line errors."""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

import convert as convert_entry
import core.checkpoint
import eval_nc
import eval_ood
import pretrain
import train_lp
from data import build_dataset
from core.checkpoint import load_checkpoint, model_from_checkpoint
from features import get_features
from models.foreign import convert

from official_models import (OfficialResNet, OfficialVGG, OfficialViT, cnn_epoch_checkpoint, stock_timm_vit,
                             vit_checkpoint)

ROOT = Path(__file__).resolve().parents[1]
PX, CLASSES = 32, 6
COMMON = ["--max_per_class", "4", "--image_size", str(PX), "--probe_epochs", "2", "--device", "cpu"]
ID_SPEC = {"name": "fashion_mnist", "classes": list(range(CLASSES)), "max_per_class": 4, "image_size": PX}
INFERRED = {"arch": None, "output_dim": None, "hidden_mlp": None, "projector": None, "global_pool": None}

pytestmark = pytest.mark.usefixtures("one_thread")

# name -> (constructor of the official model, how its script saves it)
OFFICIAL = {
    "resnet18_base": (lambda: OfficialResNet((2, 2, 2, 2), CLASSES, "bn", seed=1), "epoch"),
    "resnet18_nc": (lambda: OfficialResNet((2, 2, 2, 2), CLASSES, "gn_ws", 512, 2048, seed=2), "final"),
    "resnet34_base": (lambda: OfficialResNet((3, 4, 6, 3), CLASSES, "bn", seed=3), "final"),
    "resnet34_nc": (lambda: OfficialResNet((3, 4, 6, 3), CLASSES, "gn_ws", 512, 2048, seed=4), "epoch"),
    "vgg17_base": (lambda: OfficialVGG(CLASSES, "bn", seed=5), "epoch"),
    "vgg17_nc": (lambda: OfficialVGG(CLASSES, "gn_ws", 512, 2048, seed=6), "epoch"),
    "vit_tiny_base": (lambda: OfficialViT(192, 3, CLASSES, PX, 16, seed=7), "vit"),
    "vit_tiny_nc": (lambda: OfficialViT(192, 3, CLASSES, PX, 16, 192, 768, seed=8), "vit"),
    "vit_small_base": (lambda: OfficialViT(384, 6, CLASSES, PX, 16, seed=9), "vit"),
    "vit_small_nc": (lambda: OfficialViT(384, 6, CLASSES, PX, 16, 384, 1536, seed=10), "vit"),
}


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """``official(name) -> (the official model in eval mode, the checkpoint file its script wrote)``."""
    folder, built = tmp_path_factory.mktemp("official"), {}

    def get(name):
        if name not in built:
            make, saving = OFFICIAL[name]
            torch.manual_seed(0)
            model = make().eval()
            arch = name.rsplit("_", 1)[0]
            if saving == "epoch":
                payload = cnn_epoch_checkpoint(model, arch)
            elif saving == "final":  # the last save of the CNN scripts: weights (DataParallel) and optimizer
                payload = {"state_dict": nn.DataParallel(model).state_dict(),
                           "optimizer": torch.optim.AdamW(model.parameters()).state_dict()}
            else:
                payload = vit_checkpoint(model)
            torch.save(payload, folder / f"{name}.pth")
            built[name] = (model, folder / f"{name}.pth")
        return built[name]
    return get


def id_images(split: str) -> torch.Tensor:
    dataset = build_dataset(**ID_SPEC, split=split)
    return torch.stack([dataset[i][0] for i in range(len(dataset))])


@torch.no_grad()
def reference(model: nn.Module, images: torch.Tensor, points: dict[str, nn.Module], prefix_tokens: int = 0,
              official: bool = True) -> dict[str, torch.Tensor]:
    """Pooled outputs of ``points`` (one vector per image: GAP of conv maps, the patch-token mean of
    token maps) and, for the official models, the embedding, projection and logits."""
    out = {}

    def pool(name):
        def hook(_m, _i, o):
            out[name] = o.mean(dim=(2, 3)) if o.dim() == 4 else o[:, prefix_tokens:].mean(1) if o.dim() == 3 else o.clone()
        return hook

    if official and model.projection_head is not None:
        points = {**points, "projector_raw": model.projection_head}
    handles = [module.register_forward_hook(pool(name)) for name, module in points.items()]
    if official:
        out["encoder"], projected, out["classifier"] = model(images, embed=True)
        if model.projection_head is not None:
            out["projector"] = projected
    else:
        out["classifier"] = model(images)
    for handle in handles:
        handle.remove()
    return out


def official_points(name: str, model: nn.Module) -> dict[str, nn.Module]:
    """Our named layers (and a dotted module path of ours) -> the official modules they correspond to."""
    if name.startswith("resnet"):
        return {**{f"layer{i}": getattr(model, f"layer{i}") for i in range(1, 5)}, "last_conv": model.layer4[-1].conv2,
                "encoder.layer3.0.shortcut.1": model.layer3[0].downsample[1]}
    if name.startswith("vgg"):
        return {**{f"block{i + 1}": model.features[index] for i, index in enumerate((6, 13, 26, 39, 52))},
                "last_conv": model.features[49], "encoder.block3.4": model.features[18]}
    return {**{f"block{i}": block for i, block in enumerate(model.blocks)},
            "encoder.vit.blocks.5.mlp.fc1": model.blocks[5].mlp.fc1, "encoder.vit.patch_embed": model.patch_embed}


def assert_features_equal(fs, expected: dict[str, torch.Tensor]) -> None:
    """Equal to float32 rounding: within 1e-5 of the layer's largest magnitude (differently ordered
    sums through up to 34 layers)."""
    for layer, value in expected.items():
        scale = float(value.abs().max())
        torch.testing.assert_close(fs[layer], value.float(), rtol=1e-4, atol=1e-5 * max(scale, 1.0),
                                   msg=lambda m: f"{layer}: {m}")


def cached(path, split, layers, cache_dir, monkeypatch, foreign=None, **spec):
    """Features the evaluator cached (a hit: extracting again would fail)."""
    with monkeypatch.context() as patch:
        patch.setattr(core.checkpoint, "model_from_checkpoint", None)
        return get_features(path, {**ID_SPEC, "split": split, **spec}, layers, cache_dir=cache_dir,
                            show_progress=False, foreign={**INFERRED, "img_size": PX, **(foreign or {})})


# --------------------------------------------------------------------------- the official checkpoints

@pytest.mark.parametrize("name", list(OFFICIAL))
def test_a_converted_official_checkpoint_gives_the_logits_of_the_model_it_was_saved_from(name, official):
    model, path = official(name)
    ours = model_from_checkpoint(path, foreign={"img_size": PX})
    kwargs = ours.build_kwargs
    arch, kind = name.rsplit("_", 1)
    assert kwargs["arch"] == arch and kwargs["num_classes"] == CLASSES
    nc = kwargs["nc_control"]
    if kind == "nc":
        assert nc["projector"] == "etf" and nc["output_dim"] == ours.embed_dim and nc["hidden_mlp"] == 4 * ours.embed_dim
    else:
        assert nc["output_dim"] == 0 and nc["hidden_mlp"] == 0
    if arch.startswith("vit"):
        assert (kwargs["class_token"], kwargs["pos_embed"], kwargs["global_pool"]) == (False, "sincos", "avg")
        assert (kwargs["img_size"], kwargs["patch_size"]) == (PX, 16)
    else:
        assert kwargs["norm"] == ("gn_ws" if kind == "nc" else "bn") and kwargs["width"] == 1.0
        assert kwargs["conv_bias"] == (arch == "vgg17" and kind == "base")
    x = torch.randn(4, 3, PX, PX, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        enc, proj, logits = model(x, embed=True)
        mine = ours(x, return_all=True)
    # float32 through 17-34 layers in another order of operations (the official weight standardization and
    # GroupNorm are written differently): the absolute error is bounded relative to the tensor's scale, as in
    # assert_features_equal above (the bare 1e-5 of earlier versions failed on some CPUs by 3.7e-5)
    for a, b in [(mine[2], logits), (mine[0], enc)] + ([(mine[1], proj)] if kind == "nc" else []):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * max(float(b.abs().max()), 1.0))


def test_eval_nc_on_official_resnets_measures_the_features_of_the_official_models(tmp_path, official, monkeypatch):
    base, base_path = official("resnet18_base")
    nc, nc_path = official("resnet18_nc")
    cache = tmp_path / "cache"
    rows = eval_nc.main(["--ckpt", str(base_path), str(nc_path), "--names", "base", "nc", "--cache_dir", str(cache),
                         "--out_dir", str(tmp_path / "out"), *COMMON])
    layers = {m: [r["layer"] for r in rows if r["model"] == m] for m in ("base", "nc")}
    assert layers["base"] == ["layer1", "layer2", "layer3", "last_conv", "layer4", "encoder"]
    assert layers["nc"] == layers["base"] + ["projector_raw", "projector"]
    assert [(r["model"], r["layer"]) for r in rows if r["classifier"] == "model"] == [("base", "encoder"),
                                                                                      ("nc", "projector")]
    images = id_images("train")
    for name, model, path in (("resnet18_base", base, base_path), ("resnet18_nc", nc, nc_path)):
        expected = reference(model, images, official_points(name, model))
        dotted = [layer for layer in expected if "." in layer]  # module paths: extracted on request
        eval_nc.main(["--ckpt", str(path), "--layers", *dotted, "--cache_dir", str(cache),
                      "--out_dir", str(tmp_path / "paths"), *COMMON])
        assert_features_equal(cached(path, "train", list(expected), cache, monkeypatch), expected)


def test_eval_ood_on_official_vggs_scores_the_features_of_the_official_models(tmp_path, official, monkeypatch):
    base, base_path = official("vgg17_base")
    nc, nc_path = official("vgg17_nc")
    cache = tmp_path / "cache"
    rows = eval_ood.main(["--ckpt", str(base_path), str(nc_path), "--names", "base", "nc", "--ood",
                          "near=fashion_mnist:classes=6-9", "--no-histograms", "--layers", "last_conv", "encoder",
                          "projector", "encoder.block3.4", "--cache_dir", str(cache),
                          "--out_dir", str(tmp_path / "out"), *COMMON])
    assert {(r["model"], r["layer"]) for r in rows} == {
        (m, layer) for m in ("base", "nc") for layer in ("last_conv", "encoder", "encoder.block3.4")} | {("nc", "projector")}
    assert all(0 <= r["auroc"] <= 1 for r in rows)
    for split, spec in (("train", {}), ("test", {}), ("test", {"classes": [6, 7, 8, 9]})):
        dataset = build_dataset(**{**ID_SPEC, **spec}, split=split)
        images = torch.stack([dataset[i][0] for i in range(len(dataset))])
        for name, model, path in (("vgg17_base", base, base_path), ("vgg17_nc", nc, nc_path)):
            expected = reference(model, images, official_points(name, model))
            assert_features_equal(cached(path, split, list(expected), cache, monkeypatch, **spec), expected)


def test_train_lp_on_an_official_vit_probes_the_features_of_the_official_model(tmp_path, official, monkeypatch):
    model, path = official("vit_tiny_nc")
    cache = tmp_path / "cache"
    rows = train_lp.main(["--ckpt", str(path), "--names", "vit", "--transfer", "digits", "--layers", "block11",
                          "encoder", "projector_raw", "projector", "encoder.vit.blocks.5.mlp.fc1",
                          "encoder.vit.patch_embed", "--cache_dir", str(cache), "--out_dir", str(tmp_path / "out"),
                          *COMMON])
    assert {(r["dataset"], r["layer"]) for r in rows} >= {("digits", "encoder"), ("digits", "projector"),
                                                          ("digits", "encoder.vit.blocks.5.mlp.fc1")}
    assert next(r for r in rows if r["layer"] == "encoder" and r["dataset"] == "digits")["id_acc_from"] == "head"
    depth = {r["layer"]: r["depth"] for r in rows if r["dataset"] == "digits"}  # module paths sit where they run
    assert depth["encoder.vit.patch_embed"] < depth["encoder.vit.blocks.5.mlp.fc1"] < depth["block11"] < \
        depth["encoder"] < depth["projector_raw"] < depth["projector"]
    spec = {"name": "digits", "classes": None}
    dataset = build_dataset(**{**ID_SPEC, **spec}, split="train")
    expected = reference(model, torch.stack([dataset[i][0] for i in range(len(dataset))]),
                         official_points("vit_tiny_nc", model))
    assert_features_equal(cached(path, "train", list(expected), cache, monkeypatch, **spec), expected)


# --------------------------------------------------------------------------- torchvision and timm

def test_a_torchvision_resnet18_state_dict_is_our_imagenet_stem_resnet18(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    from official_models import _init_randomly
    _init_randomly(model, 11)
    path = tmp_path / "resnet18-torchvision.pth"
    torch.save(model.state_dict(), path)
    ours = model_from_checkpoint(path, foreign={"img_size": PX})
    assert {k: ours.build_kwargs[k] for k in ("arch", "norm", "stem", "width", "num_classes")} == \
        {"arch": "resnet18", "norm": "bn", "stem": "imagenet", "width": 1.0, "num_classes": 1000}
    cache = tmp_path / "cache"
    rows = train_lp.main(["--ckpt", str(path), "--transfer", "digits", "--no-id_metrics", "--cache_dir", str(cache),
                          "--out_dir", str(tmp_path / "out"), *COMMON])
    assert {r["layer"] for r in rows} == {"layer1", "layer2", "layer3", "last_conv", "layer4", "encoder"}
    dataset = build_dataset(**{**ID_SPEC, "name": "digits", "classes": None}, split="test")
    points = {f"layer{i}": getattr(model, f"layer{i}") for i in range(1, 5)} | {
        "encoder": model.avgpool, "last_conv": model.layer4[1].conv2}
    expected = reference(model, torch.stack([dataset[i][0] for i in range(len(dataset))]), points, official=False)
    assert_features_equal(cached(path, "test", list(expected), cache, monkeypatch, name="digits", classes=None),
                          expected)


def test_a_stock_timm_vit_tiny_patch16_224_state_dict(tmp_path, monkeypatch):
    model = stock_timm_vit(CLASSES).eval()
    path = tmp_path / "vit_tiny_patch16_224.pth"
    torch.save(model.state_dict(), path)
    cache = tmp_path / "cache"
    args = ["--ckpt", str(path), "--max_per_class", "2", "--image_size", "224", "--layers", "block0", "block11",
            "encoder", "encoder.vit.blocks.3.attn", "--device", "cpu", "--cache_dir", str(cache),
            "--out_dir", str(tmp_path / "out")]
    rows = eval_nc.main(args)
    assert [r["layer"] for r in rows] == ["block0", "block11", "encoder", "encoder.vit.blocks.3.attn"]
    dataset = build_dataset(**{**ID_SPEC, "max_per_class": 2, "image_size": 224}, split="train")
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    points = {"block0": model.blocks[0], "block11": model.blocks[11], "encoder.vit.blocks.3.attn": model.blocks[3].attn}
    expected = reference(model, images, points, prefix_tokens=1, official=False)
    with torch.no_grad():
        expected["encoder"] = model.forward_head(model.forward_features(images), pre_logits=True)
    with monkeypatch.context() as patch:
        patch.setattr(core.checkpoint, "model_from_checkpoint", None)
        fs = get_features(path, {**ID_SPEC, "max_per_class": 2, "image_size": 224, "split": "train"},
                          list(expected), cache_dir=cache, show_progress=False, foreign={**INFERRED, "img_size": 224})
    assert_features_equal(fs, expected)
    with pytest.raises(SystemExit):  # its position embedding fixes the image size
        eval_nc.main([*args[:3], "--image_size", "32", *args[5:]])


def test_timm_pooling_is_an_option_and_part_of_the_cache_key(tmp_path):
    torch.manual_seed(0)
    import timm
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=CLASSES, img_size=PX,
                              patch_size=8).eval()
    path = tmp_path / "model_best.pth.tar"  # as timm's train.py saves (its CheckpointSaver)
    torch.save({"epoch": 5, "arch": "vit_tiny_patch16_224", "state_dict": model.state_dict(), "version": 2,
                "optimizer": torch.optim.AdamW(model.parameters()).state_dict(), "metric": 41.0,
                "state_dict_ema": model.state_dict(), "args": argparse.Namespace(model="vit_tiny_patch16_224", lr=5e-4)},
               path)
    x = torch.randn(2, 3, PX, PX)
    token = model_from_checkpoint(path, foreign={})
    avg = model_from_checkpoint(path, foreign={"global_pool": "avg"})
    with torch.no_grad():
        tokens = model.forward_features(x)
        torch.testing.assert_close(token(x, return_all=True)[0], tokens[:, 0])
        torch.testing.assert_close(avg(x, return_all=True)[0], tokens[:, 1:].mean(1))
    spec = {**ID_SPEC, "max_per_class": 1, "split": "train"}
    fs = {pool: get_features(path, spec, ["encoder"], cache_dir=tmp_path / "cache", show_progress=False,
                             foreign={**INFERRED, "global_pool": pool, "img_size": PX}) for pool in ("token", "avg")}
    assert fs["token"].path != fs["avg"].path
    assert not torch.allclose(fs["token"]["encoder"], fs["avg"]["encoder"])
    assert load_checkpoint(path, foreign={})["epoch"] == 5


# --------------------------------------------------------------------------- the converter

def test_the_converter_writes_a_checkpoint_pretrain_starts_from(tmp_path, official, monkeypatch):
    model, path = official("resnet18_nc")
    out = tmp_path / "resnet18_nc.pth"
    result = subprocess.run(["bash", str(ROOT / "scripts" / "convert_official.sh")], cwd=ROOT, capture_output=True,
                            text=True, timeout=300, env={**__import__("os").environ, "SRC": str(path), "OUT": str(out), "INPUT_SIZE": str(PX)})
    assert result.returncode == 0, result.stderr
    ckpt = load_checkpoint(out)  # ours now: no conversion options needed
    assert ckpt["converted_from"]["layout"] == "resnet" and ckpt["optimizer"] is None
    assert ckpt["model_kwargs"]["norm"] == "gn_ws" and ckpt["model_kwargs"]["nc_control"]["output_dim"] == 512
    x = torch.randn(2, 3, PX, PX)
    with torch.no_grad():
        torch.testing.assert_close(model_from_checkpoint(out)(x), model(x), rtol=1e-4, atol=1e-5)
    with pytest.raises(SystemExit):  # a converted checkpoint is never overwritten
        convert_entry.main(["--ckpt", str(path), "--out", str(out)])

    # evaluated like ours, with the features of the official file
    cache = tmp_path / "cache"
    eval_nc.main(["--ckpt", str(out), "--layers", "layer4", "encoder", "projector", "--cache_dir", str(cache),
                  "--out_dir", str(tmp_path / "nc"), *COMMON])
    with monkeypatch.context() as patch:
        patch.setattr(core.checkpoint, "model_from_checkpoint", None)
        mine = get_features(out, {**ID_SPEC, "split": "train"}, ["layer4", "encoder", "projector"], cache_dir=cache,
                            show_progress=False)
    assert_features_equal(mine, reference(model, id_images("train"), {"layer4": model.layer4}))

    # pretrain.py --init_from: with lr 0 the weights it saves are the converted ones (GroupNorm: no running stats)
    pretrain.main(["--init_from", str(out), "--arch", "resnet18", "--norm", "gn_ws", "--output_dim", "512",
                   "--hidden_mlp", "2048", "--dataset", "fashion_mnist", "--classes", *map(str, range(CLASSES)),
                   "--num_classes", str(CLASSES), "--max_per_class", "2", "--image_size", str(PX), "--epochs", "1",
                   "--lr", "0", "--warmup_epochs", "0", "--batch_size", "6", "--workers", "0", "--device", "cpu",
                   "--save_dir", str(tmp_path / "run"), "--ckpt_file", "tuned.pth"])
    tuned = load_checkpoint(tmp_path / "run" / "tuned.pth")["state_dict"]
    for key, value in ckpt["state_dict"].items():
        assert torch.equal(tuned[key], value), key


def test_converted_timm_vits_and_biased_vggs_train_on_with_their_flags(tmp_path, official, capsys):
    import timm
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=CLASSES, img_size=PX, patch_size=8)
    torch.save(vit.state_dict(), tmp_path / "timm.pth")
    _, vgg_path = official("vgg17_base")
    run = ["--dataset", "fashion_mnist", "--classes", *map(str, range(CLASSES)), "--num_classes", str(CLASSES),
           "--max_per_class", "2", "--image_size", str(PX), "--epochs", "1", "--lr", "0", "--warmup_epochs", "0",
           "--batch_size", "6", "--workers", "0", "--device", "cpu"]
    cases = {"timm": (tmp_path / "timm.pth", ["--arch", "vit_tiny", "--patch_size", "8"],
                      ["--class_token", "--pos_embed", "learned", "--global_pool", "token"]),
             "vgg": (vgg_path, ["--arch", "vgg17"], ["--conv_bias"])}
    for name, (source, model_flags, hosted_flags) in cases.items():
        out = tmp_path / f"{name}_converted.pth"
        capsys.readouterr()
        convert_entry.main(["--ckpt", str(source), "--out", str(out), "--image_size", str(PX)])
        printed = capsys.readouterr().out.splitlines()[-1].split()  # the flags it prints build the model
        assert printed[:5] == ["start", "a", "run", "from", "it"] and printed[6:9] == ["pretrain.py", "--init_from", str(out)]
        flags = printed[9:]
        assert all(flag in flags for flag in [*model_flags, *hosted_flags])
        err = run_error(capsys, pretrain.main, ["--init_from", str(out), *model_flags, *run,
                                                "--save_dir", str(tmp_path / f"{name}_without")])
        assert "holds a different model" in err and hosted_flags[0].lstrip("-") in err
        pretrain.main(["--init_from", str(out), *flags, *run, "--save_dir", str(tmp_path / name),
                       "--ckpt_file", "tuned.pth"])
        tuned = load_checkpoint(tmp_path / name / "tuned.pth")["state_dict"]
        for key, value in load_checkpoint(out)["state_dict"].items():  # lr 0: only BatchNorm statistics move
            if "running_" not in key and "num_batches" not in key:
                assert torch.equal(tuned[key], value), (name, key)


# --------------------------------------------------------------------------- bad input

def run_error(capsys, main, args) -> str:
    capsys.readouterr()  # what earlier calls printed
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    return err


def test_an_unknown_layout_is_one_line_naming_the_keys(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"net": {"encoder_q.0.weight": torch.zeros(3), "queue": torch.zeros(2)}}, path)
    result = subprocess.run([sys.executable, str(ROOT / "eval_nc.py"), "--ckpt", str(path), "--cache_dir",
                             str(tmp_path), "--out_dir", str(tmp_path), *COMMON],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "no state_dict" in result.stderr and "net" in result.stderr
    torch.save({"encoder_q.0.weight": torch.zeros(3), "queue": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="keys not recognised: encoder_q.0.weight, queue"):
        convert(torch.load(path, weights_only=True))


def test_shape_mismatch_and_missing_projector_keys_are_one_line_each(tmp_path, official, capsys):
    _, nc_path = official("resnet18_nc")
    _, base_path = official("resnet18_base")
    out = ["--cache_dir", str(tmp_path), "--out_dir", str(tmp_path), *COMMON]
    err = run_error(capsys, eval_nc.main, ["--ckpt", str(nc_path), "--output_dim", "256", "--hidden_mlp", "1024", *out])
    assert "shape mismatch: projection_head.0.weight is (2048, 512)" in err
    err = run_error(capsys, eval_nc.main, ["--ckpt", str(base_path), "--output_dim", "512", "--hidden_mlp", "2048", *out])
    assert "missing projector key(s) projection_head.0.weight, projection_head.2.weight" in err
    err = run_error(capsys, eval_ood.main, ["--ckpt", str(base_path), "--arch", "resnet34", *out])
    assert "missing key(s) layer1.2.conv1.weight" in err
    err = run_error(capsys, eval_nc.main, ["--ckpt", str(base_path), "--arch", "vgg17", *out])
    assert "cannot host" in err


def test_projector_kind_is_inferred_and_checked(official):
    model, path = official("resnet18_nc")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert convert(state).model_kwargs["nc_control"]["projector"] == "etf"
    state["projection_head.2.weight"] += 0.01
    assert convert(state).model_kwargs["nc_control"]["projector"] == "learnable"
    with pytest.raises(ValueError, match="not the simplex-ETF matrix"):
        convert(state, projector="etf")
    with pytest.raises(ValueError, match="global_pool does not apply"):
        convert(state, global_pool="token")


def test_model_flags_contradicting_our_own_checkpoint_are_an_error(tiny_ckpts, tmp_path, capsys):
    err = run_error(capsys, eval_nc.main, ["--ckpt", str(tiny_ckpts["base"]), "--arch", "resnet34",
                                          "--cache_dir", str(tmp_path), "--out_dir", str(tmp_path), *COMMON])
    assert "is an nc-ood checkpoint with arch='resnet18'" in err


def test_training_reads_ours_only_and_names_the_converter(official):
    _, path = official("vgg17_base")
    with pytest.raises(core.checkpoint.UserError, match="convert_official.sh"):
        load_checkpoint(path)
