"""data/: broken inputs through the real loaders give one line naming what is wrong."""
import os

import numpy as np
import pytest
from scipy.io import savemat

import data
from test_data_files import assert_one_line_naming as one_line_naming
from test_data_files import write_image


def class_tree(root, per_class=3):
    for name in ("a", "b"):
        for i in range(per_class):
            write_image(root / name / f"{i}.png", (10 * i, 20, 30))


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symbolic links on this system")
def test_symlink_loop_in_a_class_folder_is_named(tmp_path):
    class_tree(tmp_path)
    os.symlink("..", tmp_path / "a" / "up")  # a/up -> the dataset folder: an endless walk through both classes
    with pytest.raises(data.DatasetError) as error:
        data.build_dataset("imagefolder", "train", root=tmp_path)
    one_line_naming(error, tmp_path / "a", tmp_path / "a" / "up", "loops back")


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symbolic links on this system")
def test_links_into_other_classes_or_twice_into_one_folder_are_refused_and_outside_links_followed(tmp_path):
    root = tmp_path / "set"
    class_tree(root)
    os.symlink(root / "b", root / "a" / "more")  # b's images would be labelled a
    with pytest.raises(data.DatasetError) as error:
        data.build_dataset("imagefolder", "train", root=root)
    one_line_naming(error, root / "a" / "more", "another class folder")
    os.remove(root / "a" / "more")
    extra = tmp_path / "elsewhere"
    for i in range(2):
        write_image(extra / f"x{i}.png", (i, 0, 0))
    os.symlink(extra, root / "a" / "extra")  # a folder outside the dataset: followed
    dataset = data.build_dataset("imagefolder", "train", root=root)
    assert dataset.targets.bincount().tolist() == [5, 3]
    os.symlink(extra, root / "a" / "extra_again")  # the same folder twice would count its images twice
    with pytest.raises(data.DatasetError) as error:
        data.build_dataset("imagefolder", "train", root=root)
    one_line_naming(error, root / "a", "already read")


@pytest.mark.parametrize("content", [b"", b"MATLAB 5.0 MAT-file" + b"\x00" * 40, b"not a mat file at all " * 20],
                         ids=["empty", "header-only", "garbage"])
def test_svhn_broken_mat_is_one_line_naming_the_file(tmp_path, content):
    path = tmp_path / "test_32x32.mat"
    path.write_bytes(content)
    with pytest.raises(data.DatasetError) as error:
        data.build_dataset("svhn", "test", root=tmp_path)
    one_line_naming(error, path, "svhn")


def test_svhn_truncated_mat_is_one_line_naming_the_file(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(32, 32, 3, 40), dtype=np.uint8)
    good = tmp_path / "good.mat"
    savemat(good, {"X": images, "y": np.ones((40, 1), np.uint8)})
    path = tmp_path / "train_32x32.mat"
    path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(data.DatasetError) as error:
        data.build_dataset("svhn", "train", root=tmp_path)
    one_line_naming(error, path, "not a readable MATLAB file")
    savemat(tmp_path / "extra_32x32.mat", {"X": images})  # readable, but without labels
    with pytest.raises(data.DatasetError) as error:
        data.build_dataset("svhn", "extra", root=tmp_path)
    one_line_naming(error, tmp_path / "extra_32x32.mat", "lacks the variable(s) y")


@pytest.mark.parametrize("broken", ["setid.mat", "imagelabels.mat"])
def test_flowers102_broken_mat_names_that_file(tmp_path, broken):
    base = tmp_path / "flowers-102"
    write_image(base / "jpg" / "image_00001.jpg", (9, 9, 9))
    savemat(base / "imagelabels.mat", {"labels": np.array([[1]])})
    savemat(base / "setid.mat", {"trnid": np.array([[1]]), "valid": np.array([[1]]), "tstid": np.array([[1]])})
    assert data.build_dataset("flowers102", "train", root=tmp_path).targets.tolist() == [0]
    (base / broken).write_bytes((base / broken).read_bytes()[:60])
    with pytest.raises(data.DatasetError) as error:
        data.build_dataset("flowers102", "train", root=tmp_path)
    one_line_naming(error, base / broken, "flowers102")


@pytest.mark.parametrize("text, part", [
    ("cifar100:root=/x,holdout=abc", "holdout=abc"),
    ("cifar100:root=/x,max_per_class=ten", "max_per_class=ten"),
    ("near=fashion_mnist:classes=6-x", "classes=6-x"),
    ("dtd:partition=1.5", "partition=1.5"),
])
def test_bad_spec_value_names_the_spec(text, part):
    with pytest.raises(data.DatasetError) as error:
        data.parse_spec(text)
    one_line_naming(error, repr(text), part)
