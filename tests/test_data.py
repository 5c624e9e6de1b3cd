"""data/: embedded real datasets, transforms, class splits, selection and the registry."""
import re
from pathlib import Path

import pytest
import torch

import data
from data.embedded import FASHION_MNIST_ROOT
from data.natural import IMAGENET100_CLASSES_FILE
from data.transforms import IMAGENET_MEAN, IMAGENET_STD, NormalizeRGB, build_transform

MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


def unnormalize(x):
    return (x * STD + MEAN) * 255.0


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_registry_lists_every_dataset_with_kind_and_splits():
    expected = {"fashion_mnist", "animal_mnist", "digits", "textures", "cifar10", "cifar100", "svhn", "stl10",
                "flowers102", "pets", "aircraft", "dtd", "imagenet100", "imagefolder", "mnist", "tiny_imagenet",
                "places365", "imglist"}
    assert set(data.list_datasets()) == expected
    assert data.list_datasets() == sorted(data.DATASETS)
    for name, builder in data.DATASETS.items():
        # every dataset has a test split; Places365 is read for its validation images only
        assert {"train", "test"} <= set(builder.splits) or (name, builder.splits) == ("places365", ("val", "test")), name
        small = {"fashion_mnist", "animal_mnist", "digits", "textures", "mnist"}
        assert builder.kind == ("small" if name in small else "imagenet")


def test_unknown_name_split_and_duplicate_registration_are_rejected():
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        data.build_dataset("nope", "train")
    with pytest.raises(ValueError, match="unknown split 'val'"):
        data.build_dataset("digits", "val")
    with pytest.raises(ValueError, match="already registered"):
        data.register("digits", kind="small", splits=("train",))(lambda split, root, seed: None)


@pytest.mark.skipif(not FASHION_MNIST_ROOT.is_dir(), reason=f"Fashion-MNIST files not installed at {FASHION_MNIST_ROOT}")
def test_fashion_mnist_real_files():
    train = data.build_dataset("fashion_mnist", "train")
    test = data.build_dataset("fashion_mnist", "test", image_size=28)
    assert (len(train), len(test)) == (60000, 10000)
    assert train.targets.dtype == torch.long and train.targets.bincount().tolist() == [6000] * 10
    assert train.classes[0] == "T-shirt/top" and train.classes[9] == "Ankle boot" and train.num_classes == 10
    x, y = train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == 9  # first training image is an ankle boot
    # at the native size the eval transform is exactly the normalization, channels replicated
    x, _ = test[0]
    raw = test.image(0).float()
    assert torch.allclose(unnormalize(x), raw.expand(3, -1, -1), atol=1e-3)


def test_embedded_protocol_split_on_fashion_mnist():
    assert data.EMBEDDED_ID_CLASSES == [0, 1, 2, 3, 4, 5]
    assert data.EMBEDDED_HELDOUT_CLASSES == [6, 7, 8, 9]
    assert data.class_split(10, 6) == (data.EMBEDDED_ID_CLASSES, data.EMBEDDED_HELDOUT_CLASSES)


def test_class_split_seeded_is_a_deterministic_partition():
    id_a, held_a = data.class_split(100, 60, seed=3)
    assert (id_a, held_a) == data.class_split(100, 60, seed=3)
    assert sorted(id_a + held_a) == list(range(100)) and len(id_a) == 60 and id_a == sorted(id_a)
    assert id_a != list(range(60)) and data.class_split(100, 60, seed=4)[0] != id_a
    with pytest.raises(ValueError, match="num_id"):
        data.class_split(10, 10)


def test_animal_mnist_from_package_files_without_tensorflow():
    import sys

    train = data.build_dataset("animal_mnist", "train")
    test = data.build_dataset("animal_mnist", "test")
    # 9,716 distinct images (284 of the 10,000 are repeats), split 80/20 per class
    assert (len(train), len(test)) == (7775, 1941)
    assert test.targets.bincount().tolist() == [187, 162, 198, 199, 199, 200, 200, 199, 197, 200]
    assert train.classes == ["Bear", "Bird", "Cat", "Cow", "Dog", "Elephant", "Giraffe", "Horse", "Sheep", "Zebra"]
    assert train[0][0].shape == (3, 32, 32)
    assert "tensorflow" not in sys.modules and "animal_mnist" not in sys.modules
    # no image appears twice, so no test image is also a training image
    seen = {bytes(train.image(i).numpy()) for i in range(len(train))}
    seen |= {bytes(test.image(i).numpy()) for i in range(len(test))}
    assert len(seen) == len(train) + len(test)


def test_digits_and_textures():
    digits_train, digits_test = data.build_dataset("digits", "train"), data.build_dataset("digits", "test")
    assert (len(digits_train), len(digits_test)) == (1347, 450) and digits_train.num_classes == 10
    assert digits_train.image(0).shape == (1, 28, 28) and digits_train.image(0).max() > 200
    assert digits_test.targets.bincount().min() >= 44  # stratified
    tex_train, tex_test = data.build_dataset("textures", "train"), data.build_dataset("textures", "test")
    assert tex_train.classes == ["brick", "grass", "gravel", "hubble_deep_field"]
    assert tex_train.source_files == digits_test.source_files == []  # made in memory: no files to fingerprint
    assert (len(tex_train), len(tex_test)) == (164, 160)
    assert tex_train.targets.bincount().tolist() == [41] * 4 and tex_test.targets.bincount().tolist() == [40] * 4
    x, y = tex_test[5]
    assert x.shape == (3, 32, 32) and 0 <= y < 4
    # patches are real texture, not constant, and differ between classes
    assert float(tex_train.image(0).float().std()) > 5
    assert not torch.equal(tex_train.image(0), tex_train.image(41))


def test_selection_relabels_in_given_order_and_caps_per_class():
    full = data.build_dataset("digits", "test")
    picked = data.build_dataset("digits", "test", classes=[7, 2], max_per_class=5, seed=1)
    assert picked.classes == ["7", "2"] and picked.num_classes == 2
    assert picked.targets.bincount().tolist() == [5, 5]
    assert torch.equal(data.build_dataset("digits", "test", classes=[7, 2], max_per_class=5, seed=1).targets, picked.targets)
    # each kept image is an original class-7 (label 0) or class-2 (label 1) image
    originals = {0: {bytes(full.image(i).numpy()) for i in torch.nonzero(full.targets == 7).flatten().tolist()},
                 1: {bytes(full.image(i).numpy()) for i in torch.nonzero(full.targets == 2).flatten().tolist()}}
    for i in range(len(picked)):
        assert bytes(picked.image(i).numpy()) in originals[int(picked.targets[i])]
    other_seed = data.build_dataset("digits", "test", classes=[7, 2], max_per_class=5, seed=2)
    assert any(not torch.equal(picked.image(i), other_seed.image(i)) for i in range(10))
    with pytest.raises(ValueError, match="digits: classes must be distinct"):
        data.build_dataset("digits", "test", classes=[3, 10])
    with pytest.raises(ValueError, match="max_per_class"):
        data.build_dataset("digits", "test", max_per_class=0)


def test_eval_transform_is_deterministic_and_augment_is_random():
    evaluation = data.build_dataset("textures", "test", image_size=40)
    assert torch.equal(evaluation[3][0], evaluation[3][0]) and evaluation[3][0].shape == (3, 40, 40)
    augmented = data.build_dataset("textures", "test", image_size=40, augment=True)
    draws = [augmented[3][0] for _ in range(6)]
    assert all(d.shape == (3, 40, 40) for d in draws)
    assert any(not torch.equal(draws[0], d) for d in draws[1:])


def test_build_transform_kinds():
    torch.manual_seed(0)
    image = torch.randint(0, 256, (3, 50, 70), dtype=torch.uint8)
    for train in (True, False):
        assert build_transform(train, 24, "imagenet")(image).shape == (3, 24, 24)
    assert build_transform(True, 32, "small")(image[:1, :28, :28]).shape == (3, 32, 32)
    # small train: the 4-px zero padding of RandomCrop shows as black borders on a white image
    white = torch.full((1, 28, 28), 255, dtype=torch.uint8)
    black = (-MEAN / STD).expand(3, 32, 32)
    crops = [build_transform(True, 32, "small")(white) for _ in range(10)]
    assert any(torch.isclose(c, black, atol=1e-5).any() for c in crops)
    # imagenet eval at size 56: Resize(int(256/224 * 56) = 64) (identity on 64 x 64) then CenterCrop(56)
    square = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
    expected = (square[:, 4:60, 4:60].float() / 255 - MEAN) / STD
    assert torch.allclose(build_transform(False, 56, "imagenet")(square), expected, atol=1e-5)
    constant = torch.full((1, 28, 28), 128, dtype=torch.uint8)
    out = build_transform(False, 28, "small")(constant)
    assert torch.allclose(out, ((128 / 255 - MEAN) / STD).expand(3, 28, 28), atol=1e-6)
    with pytest.raises(ValueError, match="unknown transform kind"):
        build_transform(False, 32, "tiny")
    with pytest.raises(ValueError, match="uint8"):
        NormalizeRGB()(torch.zeros(3, 4, 4))


def test_imagenet100_class_list_is_the_100_cmc_wnids():
    wnids = IMAGENET100_CLASSES_FILE.read_text().split()
    assert len(wnids) == 100 and len(set(wnids)) == 100
    assert all(re.fullmatch(r"n\d{8}", w) for w in wnids)
    assert wnids[:3] == ["n02869837", "n01749939", "n02488291"] and wnids[-1] == "n02090622"
    assert Path(data.__file__).parent / "imagenet100_classes.txt" == IMAGENET100_CLASSES_FILE
