"""Batched augmentation of in-memory datasets: per-sample random parameters, the same output
as the per-sample torchvision transforms (so the same distribution and the same numbers), and with
keys (training) the same marginals, a sample's draws depending on its key alone."""
import copy

import numpy as np
import pytest
import torch
from scipy.stats import chi2_contingency
from torch.utils.data import DataLoader, Subset
from torchvision.transforms import InterpolationMode, v2

import data
from data.transforms import NormalizeRGB, RandomCropFlip, RandomResizedCropFlip, batch_safe, build_transform, sample_keys


def reference_small_train(size: int) -> v2.Compose:
    """The ``small`` training transform written with torchvision's per-image random transforms."""
    return v2.Compose([v2.Resize(size, antialias=True), v2.RandomCrop(size, padding=size // 8),
                       v2.RandomHorizontalFlip(), NormalizeRGB()])


@pytest.mark.parametrize("shape,size", [((1, 28, 28), 32), ((1, 28, 28), 16), ((1, 28, 28), 28), ((3, 30, 44), 24),
                                        ((1, 28, 28), 7)])
def test_small_train_transform_on_a_batch_equals_torchvision_per_sample(shape, size):
    images = torch.randint(0, 256, (48, *shape), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    ours, reference = build_transform(True, size, "small"), reference_small_train(size)
    torch.manual_seed(5)
    expected = torch.stack([reference(image) for image in images])
    after_reference = torch.get_rng_state()
    torch.manual_seed(5)
    batched = ours(images)
    assert torch.equal(batched, expected)
    assert torch.equal(torch.get_rng_state(), after_reference)  # the same draws, so later draws match too
    torch.manual_seed(5)
    assert torch.equal(torch.stack([ours(image) for image in images]), expected)


def test_deterministic_transforms_on_a_batch_equal_them_per_sample():
    images = torch.randint(0, 256, (12, 3, 50, 70), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    for size, kind in ((56, "imagenet"), (32, "small"), (50, "small")):
        transform = build_transform(False, size, kind)
        assert batch_safe(transform)
        assert torch.equal(transform(images), torch.stack([transform(image) for image in images]))
    assert not batch_safe(build_transform(True, 56, "imagenet"))  # RandomResizedCrop draws one crop per call
    assert not batch_safe(reference_small_train(32))


def crop_parameters(out: torch.Tensor, padding: int) -> np.ndarray:
    """(top, left, flipped) of each sample, read back from crops of the coded image of `coded_batch`."""
    mid = out.shape[-1] // 2
    rows, cols = out[:, 0, mid, mid].long() - 1, out[:, 1, mid, mid].long() - 1
    flipped = out[:, 1, mid, mid + 1] < out[:, 1, mid, mid]
    top = rows - mid + padding
    left = torch.where(flipped, cols - (out.shape[-1] - 1 - mid), cols - mid) + padding
    return torch.stack([top, left, flipped.long()], dim=1).numpy()


def coded_batch(n: int, side: int = 28) -> torch.Tensor:
    """n copies of one image whose channel 0 holds row + 1 and channel 1 column + 1 (0 is padding)."""
    index = torch.arange(1, side + 1, dtype=torch.uint8)
    image = torch.stack([index[:, None].expand(side, side), index[None, :].expand(side, side)])
    return image.expand(n, -1, -1, -1).contiguous()


def independent(first: np.ndarray, second: np.ndarray) -> float:
    """p-value of the chi-square test that two paired categorical samples are independent."""
    values = np.unique(np.concatenate([first, second]))
    table = np.zeros((len(values), len(values)))
    np.add.at(table, (np.searchsorted(values, first), np.searchsorted(values, second)), 1)
    table = table[table.sum(1) > 0][:, table.sum(0) > 0]
    return chi2_contingency(table)[1] if min(table.shape) > 1 else 0.0


def test_crops_and_flips_are_drawn_independently_per_sample_with_the_per_sample_marginals():
    n, size, padding = 4000, 28, 3
    torch.manual_seed(0)
    ours = crop_parameters(RandomCropFlip(size, padding)(coded_batch(n)), padding)
    torch.manual_seed(1)  # another seed: the marginals must agree in distribution, not by identity
    per_sample = v2.Compose([v2.RandomCrop(size, padding=padding), v2.RandomHorizontalFlip()])
    reference = crop_parameters(torch.stack([per_sample(image) for image in coded_batch(n)]), padding)
    assert ours.min(0).tolist() == reference.min(0).tolist() == [0, 0, 0]
    assert ours.max(0).tolist() == reference.max(0).tolist() == [2 * padding, 2 * padding, 1]
    for k in range(3):  # each parameter: the same distribution as the per-sample transform's
        labels = np.concatenate([np.zeros(n), np.ones(n)])
        assert independent(labels, np.concatenate([ours[:, k], reference[:, k]])) > 1e-3
    # within one batch: neighbouring samples' parameters are independent, top and left too
    for a, b in ((ours[:-1:2, 0], ours[1::2, 0]), (ours[:-1:2, 1], ours[1::2, 1]), (ours[:-1:2, 2], ours[1::2, 2]),
                 (ours[:, 0], ours[:, 1]), (ours[:, 0], ours[:, 2])):
        assert independent(a, b) > 1e-3
    # the pitfall this guards against: a v2 random transform on a batch gives every sample one crop
    torch.manual_seed(0)
    shared = crop_parameters(per_sample(coded_batch(n)), padding)
    assert (shared == shared[0]).all()
    assert independent(shared[:-1:2, 0], shared[1::2, 0]) == 0.0


def test_in_memory_loader_batches_equal_the_per_sample_path():
    augmented = data.build_dataset("digits", "train", image_size=32, augment=True, classes=[0, 1, 2, 3])
    per_sample = copy.copy(augmented)
    per_sample.transform = reference_small_train(32)  # not batch-safe: fetched sample by sample
    assert batch_safe(augmented.transform) and not batch_safe(per_sample.transform)
    for wrap in (lambda d: d, lambda d: Subset(d, list(range(5, 300, 2)))):
        batches = []
        for dataset in (augmented, per_sample):
            torch.manual_seed(3)
            loader = DataLoader(wrap(dataset), batch_size=32, shuffle=True, drop_last=True,
                                generator=torch.Generator().manual_seed(4))
            batches.append(list(loader))
        assert len(batches[0]) == len(batches[1]) > 2
        for (x, y), (x_ref, y_ref) in zip(*batches):
            assert x.shape == (32, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
            assert torch.equal(x, x_ref) and torch.equal(y, y_ref)
    # a transform that is not batch-safe still works through the batch fetch, sample by sample
    imagenet = data.build_dataset("digits", "test", image_size=24, augment=True, transform="imagenet")
    items = imagenet.__getitems__([0, 5, 7])
    assert [label for _, label in items] == imagenet.targets[[0, 5, 7]].tolist()
    assert all(image.shape == (3, 24, 24) for image, _ in items)


def test_normalize_rgb_takes_a_batch():
    batch = torch.randint(0, 256, (5, 1, 6, 6), dtype=torch.uint8)
    out = NormalizeRGB()(batch)
    assert out.shape == (5, 3, 6, 6)
    assert torch.equal(out, torch.stack([NormalizeRGB()(image) for image in batch]))
    with pytest.raises(ValueError, match="uint8"):
        NormalizeRGB()(torch.zeros(2, 3, 4, 4))


def test_keyed_crops_and_flips_have_the_per_sample_marginals_and_match_sample_by_sample():
    n, size, padding = 4000, 28, 3
    keys = sample_keys(9, range(n))
    ours = RandomCropFlip(size, padding)(coded_batch(n), keys=keys)
    one_by_one = torch.stack([RandomCropFlip(size, padding)(image, keys=keys[i:i + 1])
                              for i, image in enumerate(coded_batch(40))])
    assert torch.equal(ours[:40], one_by_one)  # a sample's draws depend on its key alone
    ours = crop_parameters(ours, padding)
    torch.manual_seed(1)
    per_sample = v2.Compose([v2.RandomCrop(size, padding=padding), v2.RandomHorizontalFlip()])
    reference = crop_parameters(torch.stack([per_sample(image) for image in coded_batch(n)]), padding)
    assert ours.min(0).tolist() == [0, 0, 0] and ours.max(0).tolist() == [2 * padding, 2 * padding, 1]
    labels = np.concatenate([np.zeros(n), np.ones(n)])
    for k in range(3):
        assert independent(labels, np.concatenate([ours[:, k], reference[:, k]])) > 1e-3
    for a, b in ((ours[:-1:2, 0], ours[1::2, 0]), (ours[:-1:2, 2], ours[1::2, 2]), (ours[:, 0], ours[:, 1])):
        assert independent(a, b) > 1e-3


def test_resized_crop_flip_without_a_key_equals_torchvisions_crop_then_flip():
    images = torch.randint(0, 256, (6, 3, 75, 100), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
    for interpolation in (InterpolationMode.BILINEAR, InterpolationMode.BICUBIC):
        ours = RandomResizedCropFlip(32, interpolation=interpolation)
        reference = v2.Compose([v2.RandomResizedCrop(32, interpolation=interpolation, antialias=True),
                                v2.RandomHorizontalFlip()])
        torch.manual_seed(4)
        expected = [reference(image) for image in images for _ in range(5)]
        state = torch.get_rng_state()
        torch.manual_seed(4)
        assert all(torch.equal(ours(image), e) for image, e in zip(images.repeat_interleave(5, 0), expected))
        assert torch.equal(torch.get_rng_state(), state)
    with pytest.raises(ValueError, match="one image"):
        ours(images)
