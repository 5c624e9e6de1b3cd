"""data/: the datasets OpenOOD's benchmarks read, from tiny files written in each dataset's real layout."""
import struct

import numpy as np
import pytest
import torch

import data
from data.imglist import UNLABELLED
from data.openood import openood_category
from test_data_files import assert_one_line_naming as one_line_naming
from test_data_files import write_cifar10, write_image
from test_data_files import write_idx as write_idx_gz


def write_idx(path, array, compress=True):
    if compress:
        return write_idx_gz(path, array)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
                     + array.astype(np.uint8).tobytes())


# ----------------------------------------------------------------------------- MNIST

def test_mnist_idx_files_plain_and_in_torchvision_layout(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5, 9, 2])
    raw = tmp_path / "MNIST" / "raw"
    write_idx(raw / "train-images-idx3-ubyte.gz", images)
    write_idx(raw / "train-labels-idx1-ubyte.gz", labels)
    write_idx(tmp_path / "flat" / "t10k-images-idx3-ubyte", images[:2], compress=False)
    write_idx(tmp_path / "flat" / "t10k-labels-idx1-ubyte", labels[:2], compress=False)
    train = data.build_dataset("mnist", "train", root=tmp_path, image_size=28)
    assert len(train) == 7 and train.targets.tolist() == labels.tolist() and train.classes[9] == "9"
    assert torch.equal(train.image(5), torch.from_numpy(images[5])[None]) and train[5][0].shape == (3, 28, 28)
    assert train.source_files == [str(raw / "train-images-idx3-ubyte.gz"), str(raw / "train-labels-idx1-ubyte.gz")]
    test = data.build_dataset("mnist", "test", root=tmp_path / "flat")
    assert test.targets.tolist() == [3, 1] and test.source_files[0].endswith("t10k-images-idx3-ubyte")
    with pytest.raises(data.DatasetError) as error:
        data.build_dataset("mnist", "test", root=tmp_path)
    one_line_naming(error, tmp_path, "t10k-images-idx3-ubyte", "MNIST/raw")
    write_idx(tmp_path / "bad" / "t10k-images-idx3-ubyte.gz", images[:2])
    write_idx(tmp_path / "bad" / "t10k-labels-idx1-ubyte.gz", np.array([3, 11]))
    with pytest.raises(data.DatasetError) as error:
        data.build_dataset("mnist", "test", root=tmp_path / "bad")
    one_line_naming(error, tmp_path / "bad" / "t10k-labels-idx1-ubyte.gz", "labels 0..9")


# ----------------------------------------------------------------------------- Tiny ImageNet

def write_tiny_imagenet(root):
    base = root / "tiny-imagenet-200"
    wnids = ["n09999999", "n01443537", "n02085620"]  # wnids.txt is not sorted
    base.mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for k, wnid in enumerate(wnids):
        for i in range(2):
            write_image(base / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", (40 * k, i, 0))
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text(f"{wnid}_0.JPEG\t0\t0\t10\t10\n")
    annotations = [("val_0.JPEG", wnids[2]), ("val_1.JPEG", wnids[0]), ("val_2.JPEG", wnids[1])]
    for filename, wnid in annotations:
        write_image(base / "val" / "images" / filename, (wnids.index(wnid) * 40, 9, 9))
    (base / "val" / "val_annotations.txt").write_text("".join(f"{f}\t{w}\t0\t0\t63\t63\n" for f, w in annotations))
    write_image(base / "test" / "images" / "test_0.JPEG", (1, 1, 1))  # the published test images carry no labels
    return base


def test_tiny_imagenet_published_layout(tmp_path):
    base = write_tiny_imagenet(tmp_path)
    train = data.build_dataset("tiny_imagenet", "train", root=tmp_path, image_size=16)
    assert train.classes == ["n01443537", "n02085620", "n09999999"] and train.targets.tolist() == [0, 0, 1, 1, 2, 2]
    assert all("/images/" in p for p in train.paths) and train[0][0].shape == (3, 16, 16)
    val = data.build_dataset("tiny_imagenet", "val", root=base)  # the folder itself works too
    assert val.targets.tolist() == [1, 2, 0] and val.paths[0].endswith("val/images/val_0.JPEG")
    assert int(val.image(1)[0, 0, 0]) == 0  # val_1 is an image of n09999999, written with red 0
    test = data.build_dataset("tiny_imagenet", "test", root=tmp_path)
    assert test.paths == val.paths and test.source_files == [str(base / "wnids.txt"), str(base / "val" / "val_annotations.txt")]
    (base / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn00000000\t0\t0\t1\t1\n")
    with pytest.raises(data.DatasetError) as error:
        data.build_dataset("tiny_imagenet", "val", root=tmp_path)
    one_line_naming(error, base / "val" / "val_annotations.txt", "n00000000")
    with pytest.raises(data.DatasetError) as error:
        data.build_dataset("tiny_imagenet", "train", root=tmp_path / "nowhere")
    one_line_naming(error, tmp_path / "nowhere", "tiny-imagenet-200/wnids.txt", "tiny-imagenet-200.zip")


# ----------------------------------------------------------------------------- Places365

def test_places365_openood_and_official_layouts_agree(tmp_path):
    categories = ["/a/airfield", "/a/apartment_building/outdoor", "/f/field/cultivated", "/f/field_road"]
    names = [openood_category(c) for c in categories]
    assert names == ["airfield", "apartment_building-outdoor", "field-cultivated", "field_road"] and names == sorted(names)
    openood = tmp_path / "openood" / "places365"
    official = tmp_path / "official"
    val_list = []
    for number, label in enumerate([2, 0, 3, 1, 2], start=1):
        filename = f"Places365_val_{number:08d}.jpg"
        write_image(openood / names[label] / filename, (50 * label, 0, 0))
        write_image(official / "val_256" / filename, (50 * label, 0, 0))
        val_list.append(f"{filename} {label}")
    official.mkdir(exist_ok=True)
    (official / "categories_places365.txt").write_text("".join(f"{c} {i}\n" for i, c in enumerate(categories)))
    (official / "places365_val.txt").write_text("\n".join(val_list) + "\n")
    ours = data.build_dataset("places365", "test", root=openood.parent)
    theirs = data.build_dataset("places365", "val", root=official)
    assert ours.classes == theirs.classes == names
    by_file = {p.rsplit("/", 1)[1]: int(t) for p, t in zip(ours.paths, ours.targets)}
    assert by_file == {p.rsplit("/", 1)[1]: int(t) for p, t in zip(theirs.paths, theirs.targets)}
    assert theirs.targets.tolist() == [2, 0, 3, 1, 2] and ours.source_files == []
    assert theirs.source_files == [str(official / "categories_places365.txt"), str(official / "places365_val.txt")]
    with pytest.raises(data.DatasetError, match="unknown split 'train'"):
        data.build_dataset("places365", "train", root=official)
    (official / "places365_val.txt").write_text("Places365_val_00000001.jpg 365\n")
    with pytest.raises(data.DatasetError) as error:
        data.build_dataset("places365", "val", root=official)
    one_line_naming(error, official / "places365_val.txt", "IMAGE CATEGORY_INDEX")


# ----------------------------------------------------------------------------- image lists

def test_imglist_labelled_list_with_split_placeholder(tmp_path):
    images = tmp_path / "images_classic"
    lists = tmp_path / "benchmark_imglist" / "cifar10"
    lists.mkdir(parents=True)
    for split, rows in (("train", [("cat", 3), ("airplane", 0), ("ship", 8)]), ("test", [("airplane", 0), ("cat", 3)])):
        lines = []
        for i, (name, label) in enumerate(rows):
            write_image(images / "cifar10" / split / name / f"{i:04d}.png", (label * 20, i, 0), size=(32, 32))
            lines.append(f"cifar10/{split}/{name}/{i:04d}.png {label}")
        (lists / f"{split}_cifar10.txt").write_text("\n".join(lines) + "\n\n")
    spec = data.parse_spec(f"cifar10=imglist:root={images},list={lists}/{{split}}_cifar10.txt")
    train = data.build_dataset(**spec.kwargs(image_size=32), split="train")
    test = data.build_dataset(**spec.kwargs(image_size=32), split="test")
    assert train.targets.tolist() == [3, 0, 8] and test.targets.tolist() == [0, 3]
    assert train.num_classes == test.num_classes == 9  # the test split numbers its classes as the train list
    assert train.classes[:4] == ["0", "1", "2", "3"]  # classes 1, 2, ... are absent: names fall back to the labels
    assert test.paths[1] == str(images / "cifar10" / "test" / "cat" / "0001.png") and not test.test_is_train
    assert int(test.image(1)[0, 0, 0]) == 60 and test.source_files == [str(lists / "test_cifar10.txt")]
    (tmp_path / "two.txt").write_text("cifar10/test/cat/0001.png 1\ncifar10/test/airplane/0000.png 0\n")
    named = data.build_dataset("imglist", "test", root=images, list=tmp_path / "two.txt")
    assert named.classes == ["airplane", "cat"] and named.targets.tolist() == [1, 0] and named.test_is_train
    (lists / "test_cifar10.txt").write_text("cifar10/test/ship/0009.png 9\n")
    with pytest.raises(data.DatasetError) as error:
        data.build_dataset(**spec.kwargs(), split="test")
    one_line_naming(error, lists / "test_cifar10.txt", "only labels 0..8")


def test_imglist_unlabelled_ood_list_and_line_errors(tmp_path):
    images = tmp_path / "images_classic"
    for i in range(3):
        write_image(images / "tin" / "val" / "images" / f"val_{i}.JPEG", (i, i, i))
    ood = tmp_path / "test_tin.txt"
    ood.write_text("tin/val/images/val_0.JPEG -1\ntin/val/images/val_2.JPEG -1\ntin/val/images/val_1.JPEG\n")
    dataset = data.build_dataset("imglist", "test", root=images, list=ood, max_per_class=2, seed=1)
    assert dataset.classes == [UNLABELLED] and dataset.targets.tolist() == [0, 0] and len(dataset) == 2
    assert len(data.build_dataset("imglist", "val", root=images, list=ood)) == 3
    cases = {
        "tin/val/images/val_0.JPEG 2\ntin/val/images/val_1.JPEG -1\n": "mixes labelled images",
        "a.png 1\ncifar10/train/cat/3975.png { \"group_label\": 1 ,\"class_label\": 1 }\n": "line 2",
        "a.png -2\n": "integer >= 0 or -1",
        "/abs/a.png 0\n": "absolute path",
        "\n\n": "holds no lines",
    }
    for text, part in cases.items():
        ood.write_text(text)
        with pytest.raises(data.DatasetError) as error:
            data.build_dataset("imglist", "test", root=images, list=ood)
        one_line_naming(error, ood, part)
    with pytest.raises(data.DatasetError) as error:
        data.build_dataset("imglist", "test", root=images, list=tmp_path / "none.txt")
    one_line_naming(error, tmp_path / "none.txt", "does not exist")
    with pytest.raises(data.DatasetError, match="pass root="):
        data.build_dataset("imglist", "test", root=images)
    ood.write_text("tin/val/images/val_9.JPEG -1\n")
    with pytest.raises(data.DatasetError) as error:
        data.build_dataset("imglist", "test", root=images, list=ood)[0]
    one_line_naming(error, images / "tin" / "val" / "images" / "val_9.JPEG", "missing")


def test_in_memory_datasets_list_their_source_files(tmp_path):
    folder = write_cifar10(tmp_path)
    train = data.build_dataset("cifar10", "train", root=tmp_path)
    assert train.source_files == [str(folder / f"data_batch_{i}") for i in range(1, 6)] + [str(folder / "batches.meta")]
    assert data.build_dataset("cifar10", "test", root=tmp_path, max_per_class=1).source_files[0].endswith("test_batch")
    labels = np.arange(4)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((4, 28, 28)))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    fashion = data.build_dataset("fashion_mnist", "test", root=tmp_path)
    assert fashion.source_files == [str(tmp_path / "t10k-images-idx3-ubyte.gz"), str(tmp_path / "t10k-labels-idx1-ubyte.gz")]
