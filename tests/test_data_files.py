"""data/: path-based datasets read from tiny files written in each dataset's real on-disk format."""
import gzip
import pickle
import struct

import numpy as np
import pytest
import torch
from scipy.io import savemat

import data
from data.natural import imagenet100_classes
from data.transforms import IMAGENET_MEAN, IMAGENET_STD
from scripts.smoke_data import (write_cifar10, write_cifar100, write_flowers102, write_image, write_list_dataset,
                                write_stl10_split)

MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def assert_one_line_naming(error, *parts):
    message = str(error.value)
    assert "\n" not in message
    for part in parts:
        assert str(part) in message, (part, message)


# ----------------------------------------------------------------------------- CIFAR (writers: scripts/smoke_data.py)

def test_cifar10_python_batches(tmp_path):
    write_cifar10(tmp_path)
    train = data.build_dataset("cifar10", "train", root=tmp_path)
    test = data.build_dataset("cifar10", "test", root=tmp_path / "cifar-10-batches-py")  # the folder itself works too
    assert (len(train), len(test)) == (20, 4) and train.classes[3] == "class3" and train.num_classes == 10
    assert train.targets.tolist()[:8] == [0, 1, 2, 3, 1, 2, 3, 4]
    x, y = train[5]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == 2
    expected = torch.tensor([(40 * y + 10 * c) % 256 for c in range(3)]).view(3, 1, 1) / 255.0
    assert torch.allclose(x, ((expected - MEAN) / STD).expand(3, 32, 32), atol=1e-5)
    assert data.build_dataset("cifar10", "train", root=tmp_path, image_size=64, augment=True)[0][0].shape == (3, 64, 64)


def test_cifar10_class_selection_and_max_per_class(tmp_path):
    write_cifar10(tmp_path, per_batch=6)
    full = data.build_dataset("cifar10", "train", root=tmp_path)
    picked = data.build_dataset("cifar10", "train", root=tmp_path, classes=[4, 1], max_per_class=2)
    assert picked.classes == ["class4", "class1"] and picked.targets.bincount().tolist() == [2, 2]
    for i in range(len(picked)):  # the image of a relabelled sample is an image of its original class
        original = [4, 1][int(picked.targets[i])]
        assert int(picked.image(i)[0, 0, 0]) == 40 * original % 256
    assert int((full.targets == 4).sum()) > 2


def test_cifar100_fine_labels(tmp_path):
    write_cifar100(tmp_path, {"train": [0, 99, 5], "test": [7, 7]})
    train = data.build_dataset("cifar100", "train", root=tmp_path)
    assert train.targets.tolist() == [0, 99, 5] and train.num_classes == 100 and train.classes[99] == "fine99"
    assert data.build_dataset("cifar100", "test", root=tmp_path).targets.tolist() == [7, 7]
    # stats=own: CIFAR-100's channel statistics, as the official CNN evaluation normalizes it
    own = data.build_dataset("cifar100", "test", root=tmp_path, stats="own", image_size=32)
    mean, std = torch.tensor([0.5071, 0.4867, 0.4408]).view(3, 1, 1), torch.tensor([0.2675, 0.2565, 0.2761]).view(3, 1, 1)
    pixel = torch.tensor([(40 * 7 + 10 * c) % 256 for c in range(3)]).view(3, 1, 1) / 255.0
    assert torch.allclose(own[0][0], ((pixel - mean) / std).expand(3, 32, 32), atol=1e-5)
    assert "0.5071" in repr(own.transform)
    with pytest.raises(data.DatasetError, match="stl10: no statistics of its own.*cifar10, cifar100"):
        data.build_dataset("stl10", "test", root=tmp_path, stats="own")
    with pytest.raises(data.DatasetError, match="unknown stats='cifar'"):
        data.build_dataset("cifar100", "test", root=tmp_path, stats="cifar")


def test_missing_and_malformed_cifar_give_one_line_naming_the_path(tmp_path):
    with pytest.raises(data.DatasetError) as error:
        data.build_dataset("cifar10", "train", root=tmp_path / "nowhere")
    assert_one_line_naming(error, tmp_path / "nowhere", "cifar-10-batches-py/data_batch_1", "cifar-10-python.tar.gz")
    with pytest.raises(data.DatasetError) as error:
        data.build_dataset("cifar10", "train")
    assert_one_line_naming(error, "no root given")
    folder = write_cifar10(tmp_path)
    (folder / "data_batch_3").write_bytes(b"this is not a pickle")
    with pytest.raises(data.DatasetError) as error:
        data.build_dataset("cifar10", "train", root=tmp_path)
    assert_one_line_naming(error, folder / "data_batch_3", "not a CIFAR python batch")
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(data.DatasetError) as error:
        data.build_dataset("cifar10", "test", root=tmp_path)
    assert_one_line_naming(error, folder / "test_batch", "3072")


# ----------------------------------------------------------------------------- Fashion-MNIST IDX

def write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_idx_in_torchvision_layout(tmp_path):
    rng = np.random.default_rng(0)
    raw = tmp_path / "FashionMNIST" / "raw"
    images = rng.integers(0, 256, size=(12, 28, 28), dtype=np.uint8)
    labels = np.arange(12) % 10
    write_idx(raw / "train-images-idx3-ubyte.gz", images)
    write_idx(raw / "train-labels-idx1-ubyte.gz", labels)
    write_idx(raw / "t10k-images-idx3-ubyte.gz", images[:3])
    write_idx(raw / "t10k-labels-idx1-ubyte.gz", labels[:3])
    train = data.build_dataset("fashion_mnist", "train", root=tmp_path, image_size=28)
    assert len(train) == 12 and train.targets.tolist() == labels.tolist()
    assert torch.equal(train.image(4), torch.from_numpy(images[4])[None])
    x, y = train[4]
    assert y == 4 and x.shape == (3, 28, 28)
    assert torch.allclose(x, (torch.from_numpy(images[4]).float() / 255 - MEAN) / STD, atol=1e-5)  # gray -> 3 channels
    sub = data.build_dataset("fashion_mnist", "train", root=tmp_path, classes=[6, 7, 8, 9], max_per_class=1)
    assert sub.classes == ["Shirt", "Sneaker", "Bag", "Ankle boot"] and sub.targets.tolist() == [0, 1, 2, 3]
    assert len(data.build_dataset("fashion_mnist", "test", root=tmp_path)) == 3


def test_fashion_mnist_bad_idx_names_the_file(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((2, 28, 28)))
    with gzip.open(tmp_path / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(bytes([0, 0, 0x08, 3]) + b"\x00" * 16)  # labels must be 1-d
    with pytest.raises(data.DatasetError) as error:
        data.build_dataset("fashion_mnist", "train", root=tmp_path)
    assert_one_line_naming(error, tmp_path / "train-labels-idx1-ubyte.gz", "magic")
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(2))
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(bytes([0, 0, 8, 3]) + struct.pack(">3I", 2, 28, 28) + b"\x00" * 10))
    with pytest.raises(data.DatasetError) as error:
        data.build_dataset("fashion_mnist", "train", root=tmp_path)
    assert_one_line_naming(error, tmp_path / "train-images-idx3-ubyte.gz", "truncated")
    with pytest.raises(data.DatasetError) as error:
        data.build_dataset("fashion_mnist", "test", root=tmp_path)
    assert_one_line_naming(error, tmp_path, "t10k-images-idx3-ubyte")


# ----------------------------------------------------------------------------- image folders

def test_imagefolder_tree_with_split_folders_and_grayscale(tmp_path):
    for split, count in (("train", 3), ("val", 2)):
        for k, name in enumerate(["cat", "dog"]):
            for i in range(count):
                write_image(tmp_path / split / name / f"{i}.png", (200 * k, 50, 100 + i))
    write_image(tmp_path / "train" / "dog" / "sub" / "gray.png", 90, mode="L")
    (tmp_path / "train" / "dog" / "notes.txt").write_text("not an image")
    train = data.build_dataset("imagefolder", "train", root=tmp_path, image_size=24)
    assert train.classes == ["cat", "dog"] and train.targets.tolist() == [0, 0, 0, 1, 1, 1, 1]
    x, y = train[0]
    assert x.shape == (3, 24, 24) and y == 0
    assert torch.allclose(x, ((torch.tensor([0.0, 50, 100]).view(3, 1, 1) / 255 - MEAN) / STD).expand(3, 24, 24), atol=1e-5)
    gray_index = [i for i, p in enumerate(train.paths) if p.endswith("gray.png")][0]
    assert torch.equal(train.image(gray_index), torch.full((3, 16, 20), 90, dtype=torch.uint8))
    test = data.build_dataset("imagefolder", "test", root=tmp_path)  # falls back to val/
    assert len(test) == 4 and test.targets.tolist() == [0, 0, 1, 1]


def test_imagefolder_holdout_is_the_official_stratified_split(tmp_path):
    from sklearn.model_selection import train_test_split

    for k in range(3):
        for i in range(5 + k):
            write_image(tmp_path / f"class{k}" / f"{i}.png", (10 * i, 20 * k, 0))
    whole = data.build_dataset("imagefolder", "test", root=tmp_path)
    train = data.build_dataset("imagefolder", "train", root=tmp_path, holdout=0.2, seed=0)
    test = data.build_dataset("imagefolder", "test", root=tmp_path, holdout=0.2, seed=0)
    # the official NC-OOD hold-out: sklearn's stratified train_test_split over the ImageFolder order
    _, official = train_test_split(np.arange(18), test_size=0.2, random_state=0, stratify=whole.targets.numpy())
    assert test.paths == [whole.paths[i] for i in sorted(official)]
    assert len(test) == 4 and len(train) == 14 and test.targets.bincount().tolist() in ([1, 1, 2], [1, 2, 1], [2, 1, 1])
    assert not set(train.paths) & set(test.paths) and len(set(train.paths) | set(test.paths)) == 18
    assert data.build_dataset("imagefolder", "test", root=tmp_path, holdout=0.2, seed=0).paths == test.paths
    other = [data.build_dataset("imagefolder", "test", root=tmp_path, holdout=0.2, seed=s).paths for s in range(1, 6)]
    assert any(paths != test.paths for paths in other)
    with pytest.raises(ValueError, match="holdout"):
        data.build_dataset("imagefolder", "train", root=tmp_path, holdout=1.5)
    write_image(tmp_path / "class3" / "only.png", (0, 0, 0))
    with pytest.raises(data.DatasetError, match="cannot split this folder stratified by class") as error:
        data.build_dataset("imagefolder", "test", root=tmp_path, holdout=0.2, seed=0)
    assert "\n" not in str(error.value)


def test_imagefolder_errors(tmp_path):
    with pytest.raises(data.DatasetError) as error:
        data.build_dataset("imagefolder", "train", root=tmp_path / "missing")
    assert_one_line_naming(error, tmp_path / "missing", "not a folder")
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(data.DatasetError) as error:
        data.build_dataset("imagefolder", "train", root=tmp_path)
    assert_one_line_naming(error, tmp_path / "empty_class", "no image files")
    broken = tmp_path / "broken"
    (broken / "a").mkdir(parents=True)
    (broken / "a" / "x.png").write_bytes(b"not a png")
    dataset = data.build_dataset("imagefolder", "train", root=broken)
    with pytest.raises(data.DatasetError) as error:
        dataset[0]
    assert_one_line_naming(error, broken / "a" / "x.png", "not a readable image")
    split_only = tmp_path / "splits"
    write_image(split_only / "train" / "a" / "0.png", 1)
    with pytest.raises(data.DatasetError) as error:
        data.build_dataset("imagefolder", "test", root=split_only)
    assert_one_line_naming(error, split_only, "test or val/")


def test_imagenet100_keeps_only_listed_wnids(tmp_path):
    listed = imagenet100_classes()
    wnids = [listed[5], listed[0], "n99999999"]
    for split in ("train", "val"):
        for k, wnid in enumerate(wnids):
            for i in range(2):
                write_image(tmp_path / split / wnid / f"{wnid}_{i}.png", (k * 60, i, 0))
    with pytest.warns(UserWarning, match="2 of the 100"):
        train = data.build_dataset("imagenet100", "train", root=tmp_path, image_size=16)
    assert train.classes == sorted(wnids[:2]) and len(train) == 4
    assert not any("n99999999" in p for p in train.paths)
    assert train[0][0].shape == (3, 16, 16)
    with pytest.warns(UserWarning):
        test = data.build_dataset("imagenet100", "test", root=tmp_path)
    assert all("/val/" in p for p in test.paths) and test.targets.tolist() == [0, 0, 1, 1]
    with pytest.raises(data.DatasetError) as error:
        data.build_dataset("imagenet100", "train", root=tmp_path / "val")
    assert_one_line_naming(error, tmp_path / "val", "train")


# ----------------------------------------------------------------------------- SVHN, STL-10

def test_svhn_mat_maps_label_10_to_digit_0(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(32, 32, 3, 4), dtype=np.uint8)
    savemat(tmp_path / "test_32x32.mat", {"X": images, "y": np.array([[10], [1], [9], [10]], dtype=np.uint8)})
    test = data.build_dataset("svhn", "test", root=tmp_path)
    assert test.targets.tolist() == [0, 1, 9, 0] and test.classes[0] == "0"
    assert torch.equal(test.image(2), torch.from_numpy(images[:, :, :, 2]).permute(2, 0, 1))
    with pytest.raises(data.DatasetError) as error:
        data.build_dataset("svhn", "train", root=tmp_path)
    assert_one_line_naming(error, tmp_path, "train_32x32.mat")


def test_stl10_binary_column_major(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(3, 3, 96, 96), dtype=np.uint8)
    write_stl10_split(tmp_path / "stl10_binary", "train", images, [1, 10, 4])
    train = data.build_dataset("stl10", "train", root=tmp_path, image_size=48)
    assert train.targets.tolist() == [0, 9, 3] and train.classes[9] == "c9"
    assert torch.equal(train.image(1), torch.from_numpy(images[1])) and train[1][0].shape == (3, 48, 48)
    bad = tmp_path / "bad" / "stl10_binary"
    write_stl10_split(bad, "test", images[:2], [1])
    with pytest.raises(data.DatasetError) as error:
        data.build_dataset("stl10", "test", root=bad.parent)
    assert_one_line_naming(error, bad / "test_X.bin", "27,648")


# ----------------------------------------------------------------------------- list-file datasets

def test_flowers102_mat_files(tmp_path):
    write_flowers102(tmp_path / "flowers-102", [1, 102, 3, 1, 2, 3], {"trnid": [1, 2], "valid": [3, 4], "tstid": [5, 6]})
    train = data.build_dataset("flowers102", "train", root=tmp_path)
    assert train.targets.tolist() == [0, 101] and train.num_classes == 102 and train.classes[0] == "pink primrose"
    assert data.build_dataset("flowers102", "val", root=tmp_path).targets.tolist() == [2, 0]
    assert data.build_dataset("flowers102", "test", root=tmp_path)[1][0].shape == (3, 32, 32)


def test_pets_aircraft_dtd_list_files(tmp_path):
    write_list_dataset(tmp_path / "oxford-iiit-pet",
                       {"annotations/trainval.txt": ["Abyssinian_1 1 1 1", "american_bulldog_2 2 2 1"],
                        "annotations/test.txt": ["Abyssinian_3 1 1 1", "american_bulldog_4 2 2 1"]},
                       "images", ["Abyssinian_1", "american_bulldog_2", "Abyssinian_3", "american_bulldog_4"])
    train = data.build_dataset("pets", "train", root=tmp_path)
    assert train.classes == ["Abyssinian", "American Bulldog"] and train.targets.tolist() == [0, 1]
    assert train[1][0].shape == (3, 32, 32)

    air = tmp_path / "fgvc-aircraft-2013b" / "data"
    write_list_dataset(air, {"variants.txt": ["707-320", "A300B4", "F/A-18"],
                             "images_variant_trainval.txt": ["0001 F/A-18", "0002 707-320"],
                             "images_variant_test.txt": ["0003 A300B4"]}, "images", ["0001", "0002", "0003"])
    aircraft = data.build_dataset("aircraft", "train", root=tmp_path)
    assert aircraft.classes == ["707-320", "A300B4", "F/A-18"] and aircraft.targets.tolist() == [2, 0]
    assert data.build_dataset("aircraft", "test", root=tmp_path).targets.tolist() == [1]
    with pytest.raises(data.DatasetError) as error:
        data.build_dataset("aircraft", "val", root=tmp_path)
    assert_one_line_naming(error, air, "images_variant_val.txt")

    dtd = tmp_path / "dtd" / "dtd"  # torchvision's layout
    (dtd / "labels").mkdir(parents=True)
    (dtd / "labels" / "test2.txt").write_text("zigzagged/z_1.jpg\nbanded/b_1.jpg\n")
    write_image(dtd / "images" / "zigzagged" / "z_1.jpg", (9, 9, 9))
    write_image(dtd / "images" / "banded" / "b_1.jpg", (9, 9, 9))
    textures = data.build_dataset("dtd", "test", root=tmp_path, partition=2)
    assert textures.classes == ["banded", "zigzagged"] and textures.targets.tolist() == [1, 0]
    with pytest.raises(data.DatasetError) as error:
        data.build_dataset("dtd", "test", root=tmp_path)
    assert_one_line_naming(error, "labels/test1.txt")


def test_specs_carry_the_protocol_keys():
    spec = data.parse_spec("ninco=imagefolder:root=/data/NINCO,holdout=0.2")
    assert (spec.label, spec.name, spec.options) == ("ninco", "imagefolder", {"root": "/data/NINCO", "holdout": 0.2})
    assert data.parse_spec("cifar100:root=/data/c,stats=own").options == {"root": "/data/c", "stats": "own"}
    with pytest.raises(data.DatasetError, match="bad option 'split=val'"):
        data.parse_spec("flowers102:split=val")
