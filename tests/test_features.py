"""Layer-wise feature extraction and the on-disk feature cache, on a tiny ResNet and Fashion-MNIST."""
import functools
import json
import os

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

import data
import core.checkpoint
import features.cache as features
from core.checkpoint import save_checkpoint
from core.errors import UserError
from features import FeatureSet, extract, get_features
from nc_control.layers import pool_output
from models import build_model

SPEC = dict(name="fashion_mnist", split="test", classes=[0, 1, 2, 3, 4, 5], max_per_class=8, image_size=32)
PROJ = {"output_dim": 64, "hidden_mlp": 256}


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(seed: int, projector: bool = True):
    torch.manual_seed(seed)
    return build_model("resnet18", 6, nc_control=PROJ if projector else None, stem="cifar", width=0.125,
                       img_size=32)


@pytest.fixture(scope="module")
def dataset():
    return data.build_dataset(**SPEC)


@pytest.fixture(scope="module")
def images(dataset):
    return torch.stack([dataset[i][0] for i in range(len(dataset))]), dataset.targets.clone()


@pytest.fixture
def ckpt(tmp_path):
    path = tmp_path / "model.pth"
    save_checkpoint(path, model=tiny_model(0), epoch=1, config={})
    return path


def direct_features(model, x):
    """Reference: encoder / projector / logits from forward(return_all=True), layer4 by a manual GAP."""
    stage = {}
    handle = model.named_layers()["layer4"].register_forward_hook(lambda m, i, o: stage.update(out=o))
    with torch.no_grad():
        enc, proj, logits = model.eval()(x, return_all=True)
    handle.remove()
    return {"encoder": enc, "projector": proj, "classifier": logits, "layer4": stage["out"].mean(dim=(2, 3))}


def all_hooks(model):
    return sum(len(m._forward_hooks) for m in model.modules())


class FailingAt(Dataset):
    """A dataset whose item ``k`` cannot be read (an interrupted extraction)."""

    def __init__(self, base, k):
        self.base, self.k = base, k
        self.targets, self.classes, self.transform = base.targets, base.classes, base.transform
        self.num_classes = base.num_classes

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        if i == self.k:
            raise OSError(f"cannot read image {i}")
        return self.base[i]


def test_extract_matches_direct_forward_and_removes_hooks(dataset, images):
    model = tiny_model(0)
    x, y = images
    ref = direct_features(model, x)
    model.train()
    out = extract(model, dataset, ["layer4", "encoder", "projector", "classifier"], device="cpu", batch_size=20,
                  show_progress=False)
    assert out.labels.tolist() == y.tolist()
    for name, value in ref.items():
        assert out.features[name].dtype == torch.float32
        torch.testing.assert_close(out.features[name], value, rtol=0, atol=1e-6)
    assert all_hooks(model) == 0 and model.training  # hooks gone, train mode restored

    half = extract(model, dataset, "encoder", device="cpu", batch_size=20, show_progress=False, float16=True)
    assert half.features["encoder"].dtype == torch.float16
    with pytest.raises(UserError, match="unknown layer 'layer5' .*named layers: layer1, layer2, layer3, last_conv, "
                                        "layer4, encoder, projector_raw, projector, classifier; or the dotted path"):
        extract(model, dataset, ["encoder", "layer5"], device="cpu")
    with pytest.raises(OSError, match="cannot read image 20"):
        extract(model, FailingAt(dataset, 20), ["encoder"], device="cpu", batch_size=8, show_progress=False)
    assert all_hooks(model) == 0 and model.training


def test_extract_runs_one_forward_pass_per_batch(dataset):
    model = tiny_model(0)
    calls = []
    model.register_forward_pre_hook(lambda m, inputs: calls.append(len(inputs[0])))
    extract(model, dataset, ["layer1", "layer2", "layer3", "layer4", "encoder", "projector"], device="cpu",
            batch_size=16, show_progress=False)
    assert calls == [16, 16, 16]


class TokenNet(nn.Module):
    """Stand-in token model: one class token followed by 4 patch tokens."""

    num_prefix_tokens = 1

    def __init__(self):
        super().__init__()
        self.block = nn.Identity()

    def named_layers(self):
        return {"block0": self.block}

    def forward(self, x):
        return self.block(x)


def test_pooling_of_token_maps_conv_maps_and_vectors():
    tokens = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(tokens, torch.tensor([0, 1])), batch_size=2)
    out = extract(TokenNet(), loader, ["block0"], device="cpu", show_progress=False)
    torch.testing.assert_close(out.features["block0"], tokens[:, 1:].mean(dim=1))
    conv = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(pool_output(conv), conv.mean(dim=(2, 3)))
    vec = torch.randn(2, 7)
    assert torch.equal(pool_output(vec), vec)
    with pytest.raises(ValueError, match="2-, 3- or 4-D"):
        pool_output(torch.zeros(2, 1, 1, 1, 1))


def test_cache_stores_exact_features_and_a_hit_never_runs_the_model(tmp_path, ckpt, images, monkeypatch):
    cache = tmp_path / "cache"
    fs = get_features(ckpt, SPEC, ["encoder", "projector", "layer4"], cache_dir=cache, device="cpu",
                      batch_size=20, show_progress=False)
    assert isinstance(fs, FeatureSet) and fs.layers == ["encoder", "projector", "layer4"]
    x, y = images
    ref = direct_features(core.checkpoint.model_from_checkpoint(ckpt), x)
    for name in fs.layers:
        assert fs[name].dtype == torch.float32 and fs[name].shape == ref[name].shape
        torch.testing.assert_close(fs[name], ref[name], rtol=0, atol=1e-6)
    assert fs.labels.dtype == torch.long and torch.equal(fs.labels, y)
    assert fs.num_classes == 6 and len(fs) == 48
    meta = json.loads((fs.path / "meta.json").read_text())
    assert meta["checkpoint"]["sha256"] == core.checkpoint.file_hash(ckpt)
    every_layer = {"encoder": ("encoder_out", 64), "projector": ("projector_out", 64), "layer4": ("encoder.layer4", 64),
                   "layer1": ("encoder.layer1", 8), "layer2": ("encoder.layer2", 16), "layer3": ("encoder.layer3", 32),
                   "last_conv": ("encoder.layer4.1.conv2", 64), "projector_raw": ("projector", 64),
                   "classifier": ("classifier", 6)}  # a miss extracts every named layer in the same pass
    assert meta["layers"] == {name: {"dim": dim, "module": path} for name, (path, dim) in every_layer.items()}
    assert meta["num_samples"] == 48 and meta["dtype"] == "float32" and "Resize" in meta["transform"]["transform"]
    assert sorted(p.name for p in fs.path.iterdir()) == sorted([f"{n}.npy" for n in every_layer] +
                                                               ["labels.npy", "meta.json"])
    chunks = list(fs.iter_batches("projector", batch_size=20))
    assert [len(c[0]) for c in chunks] == [20, 20, 8]
    assert torch.equal(torch.cat([c[0] for c in chunks]), fs["projector"])
    assert torch.equal(torch.cat([c[1] for c in chunks]), fs.labels)

    def must_not_run(*args, **kwargs):
        raise AssertionError("the model was rebuilt on a cache hit")

    monkeypatch.setattr(core.checkpoint, "model_from_checkpoint", must_not_run)
    monkeypatch.setattr(features, "extract", must_not_run)
    again = get_features(ckpt, {**SPEC, "root": None, "seed": 0}, ["projector", "encoder"], cache_dir=cache,
                         device="cpu", show_progress=False)
    assert again.path == fs.path and again.layers == ["projector", "encoder"]
    assert torch.equal(again["encoder"], fs["encoder"])


def test_a_miss_runs_the_model_once_for_every_layer(tmp_path, ckpt, monkeypatch):
    cache = tmp_path / "cache"
    requested = []
    real_extract = features.extract

    def recording_extract(model, loader, layers, **kwargs):
        requested.append(list(layers))
        return real_extract(model, loader, layers, **kwargs)

    monkeypatch.setattr(features, "extract", recording_extract)
    fs = get_features(ckpt, SPEC, ["encoder"], cache_dir=cache, device="cpu", show_progress=False)
    assert requested == [["encoder", "layer1", "layer2", "layer3", "last_conv", "layer4", "projector_raw", "projector",
                          "classifier"]]
    encoder_file = os.stat(fs.path / "encoder.npy")
    more = get_features(ckpt, SPEC, ["encoder", "layer2"], cache_dir=cache, device="cpu", show_progress=False)
    assert len(requested) == 1, "a request for another layer after a miss must be a cache hit"
    assert more.path == fs.path and more["layer2"].shape == (48, 16)
    after = os.stat(fs.path / "encoder.npy")
    assert (after.st_ino, after.st_mtime_ns) == (encoder_file.st_ino, encoder_file.st_mtime_ns)
    assert [p.name for p in cache.iterdir()] == [fs.path.name]


def test_new_weights_at_the_same_path_rebuild_the_entry(tmp_path, ckpt):
    cache = tmp_path / "cache"
    old = get_features(ckpt, SPEC, ["encoder"], cache_dir=cache, device="cpu", show_progress=False)
    save_checkpoint(ckpt, model=tiny_model(1), epoch=2, config={})
    new = get_features(ckpt, SPEC, ["encoder"], cache_dir=cache, device="cpu", show_progress=False)
    assert new.path != old.path and sorted(p.name for p in cache.iterdir()) == sorted([old.path.name, new.path.name])
    assert not torch.allclose(new["encoder"], old["encoder"])
    assert new.meta["checkpoint"]["sha256"] == core.checkpoint.file_hash(ckpt)


def test_an_interrupted_extraction_leaves_nothing_behind(tmp_path, ckpt, monkeypatch):
    cache = tmp_path / "cache"
    real_build = data.build_dataset

    @functools.wraps(real_build)
    def failing_build(*args, **kwargs):
        return FailingAt(real_build(*args, **kwargs), k=20)

    monkeypatch.setattr(data, "build_dataset", failing_build)
    with pytest.raises(OSError, match="cannot read image 20"):
        get_features(ckpt, SPEC, ["encoder"], cache_dir=cache, device="cpu", batch_size=8, show_progress=False)
    assert list(cache.iterdir()) == []

    monkeypatch.setattr(data, "build_dataset", real_build)
    fs = get_features(ckpt, SPEC, ["encoder"], cache_dir=cache, device="cpu", show_progress=False)
    assert [p.name for p in cache.iterdir()] == [fs.path.name]  # no temporary directory left over


def test_a_dataset_whose_labels_changed_gets_its_entry_rebuilt(tmp_path, ckpt, monkeypatch):
    cache = tmp_path / "cache"
    before = get_features(ckpt, SPEC, ["encoder"], cache_dir=cache, device="cpu", show_progress=False)
    old_labels, old_encoder = before.labels.clone(), before["encoder"].clone()
    real_build = data.build_dataset

    @functools.wraps(real_build)
    def relabelled_build(*args, **kwargs):
        dataset = real_build(*args, **kwargs)
        dataset.targets = dataset.targets.roll(1)
        return dataset

    monkeypatch.setattr(data, "build_dataset", relabelled_build)
    with pytest.warns(UserWarning, match="labels.npy no longer matches the dataset's labels.*rebuilding the entry"):
        after = get_features(ckpt, SPEC, ["encoder"], cache_dir=cache, device="cpu", show_progress=False)
    assert torch.equal(after.labels, old_labels.roll(1))
    torch.testing.assert_close(after["encoder"], old_encoder)  # the same images, relabelled


def test_float16_storage_is_a_separate_entry_close_to_float32(tmp_path, ckpt):
    cache = tmp_path / "cache"
    full = get_features(ckpt, SPEC, ["encoder"], cache_dir=cache, device="cpu", show_progress=False)
    half = get_features(ckpt, SPEC, ["encoder"], cache_dir=cache, device="cpu", float16=True, show_progress=False)
    assert half.path != full.path and half.meta["dtype"] == "float16"
    assert np.load(half.path / "encoder.npy", mmap_mode="r").dtype == np.float16
    assert half["encoder"].dtype == torch.float32
    torch.testing.assert_close(half["encoder"], full["encoder"], rtol=1e-3, atol=1e-3)
    assert not torch.equal(half["encoder"], full["encoder"])


def test_dataset_spec_is_normalized_and_checked():
    base = features.normalize_spec(SPEC)
    assert base == features.normalize_spec({**SPEC, "root": None, "seed": 0, "augment": False})
    assert features.normalize_spec({**SPEC, "seed": 1}) != base
    with pytest.raises(ValueError, match="augment=True"):
        features.normalize_spec({**SPEC, "augment": True})
    with pytest.raises(ValueError, match="needs split"):
        features.normalize_spec({"name": "fashion_mnist"})


def test_missing_checkpoint_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        get_features(tmp_path / "nope.pth", SPEC, ["encoder"], cache_dir=tmp_path / "cache", device="cpu")


def test_extraction_runs_in_float32_unless_bfloat16_is_asked_for(dataset):
    model = tiny_model(0)
    seen = []
    model.named_layers()["last_conv"].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    full = extract(model, dataset, ["encoder"], device="cpu", batch_size=48, show_progress=False)
    bf16 = extract(model, dataset, ["encoder"], device="cpu", batch_size=48, show_progress=False,
                   precision="bfloat16")
    assert seen == [torch.float32, torch.bfloat16]  # the default forward pass never autocasts, on any device
    assert full.features["encoder"].dtype == bf16.features["encoder"].dtype == torch.float32
    diff = (full.features["encoder"] - bf16.features["encoder"]).abs().max()
    assert 0 < diff < 0.05 * full.features["encoder"].abs().max()
    with pytest.raises(ValueError, match="precision must be one of float32, bfloat16"):
        extract(model, dataset, ["encoder"], device="cpu", precision="float16")


def test_precision_is_part_of_the_cache_key(tmp_path, ckpt):
    cache = tmp_path / "cache"
    full = get_features(ckpt, SPEC, ["encoder"], cache_dir=cache, device="cpu", show_progress=False)
    bf16 = get_features(ckpt, SPEC, ["encoder"], cache_dir=cache, device="cpu", show_progress=False,
                        precision="bfloat16")
    assert full.path != bf16.path and full.meta["precision"] == "float32" and bf16.meta["precision"] == "bfloat16"
    assert full.meta["device"] == "cpu"
    assert not torch.equal(full["encoder"], bf16["encoder"])
    again = get_features(ckpt, SPEC, ["encoder"], cache_dir=cache, device="cpu", show_progress=False)
    assert again.path == full.path
    with pytest.raises(UserError, match="unknown extraction precision 'fp16'"):
        get_features(ckpt, SPEC, ["encoder"], cache_dir=cache, device="cpu", precision="fp16")
