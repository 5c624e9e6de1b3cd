"""Training augmentation drawn from (seed, epoch, rank, position): the worker count cannot change the
batches or the trained weights, in-memory batches stay batched, repeated images get new draws, and
uint8 batches normalized after the loader (as on a GPU) hold the same values."""
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Subset

import data
import pretrain
from core.checkpoint import load_checkpoint
from data.dataset import DeviceBatches, EpochSamples, PositionSampler
from data.transforms import sample_keys

TINY = ["--classes", "0", "1", "2", "--num_classes", "3", "--image_size", "16", "--arch", "resnet18",
        "--stem", "cifar", "--width", "0.125", "-b", "8", "--lr", "0.003", "--warmup_epochs", "0", "--device", "cpu",
        "--epochs", "1"]


def jpeg_folder(root, per_class: int = 8) -> None:
    """Three classes of 80 x 60 JPEGs cut from scikit-image photographs (different places and sizes)."""
    import skimage.data

    rng = np.random.default_rng(0)
    for name in ("astronaut", "chelsea", "coffee"):
        image = getattr(skimage.data, name)()
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            h, w = rng.integers(120, image.shape[0] // 1.2), rng.integers(160, image.shape[1] // 1.2)
            top, left = rng.integers(0, image.shape[0] - h), rng.integers(0, image.shape[1] - w)
            patch = Image.fromarray(image[top:top + h, left:left + w]).resize((80, 60), Image.BILINEAR)
            patch.save(root / name / f"{i}.jpg", quality=int(rng.integers(75, 96)))


def training_set(source: str, tmp_path, per_class: int):
    """An augmented training set: in memory (digits, the batched pad-and-crop) or JPEG files (RandomResizedCrop)."""
    if source == "in_memory":
        return data.build_dataset("digits", "train", image_size=16, augment=True, max_per_class=per_class)
    jpeg_folder(tmp_path, per_class=per_class)
    return data.build_dataset("imagefolder", "train", root=tmp_path, image_size=32, augment=True)


def trained_weights(tmp_path, args, workers: int) -> dict:
    save_dir = tmp_path / f"j{workers}"
    pretrain.main(TINY + args + ["--workers", str(workers), "--save_dir", str(save_dir)])
    return load_checkpoint(save_dir / "model.pth")["state_dict"]


@pytest.mark.parametrize("source", ["in_memory", pytest.param("jpeg_files", marks=pytest.mark.slow)])
def test_the_worker_count_does_not_change_the_trained_weights(tmp_path, monkeypatch, source):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    if source == "in_memory":  # the batched pad-and-crop path
        args = ["--dataset", "fashion_mnist", "--max_per_class", "12"]
    else:  # RandomResizedCrop of JPEG files, fast decode
        jpeg_folder(tmp_path / "photos")
        args = ["--dataset", "imagefolder", "--data", str(tmp_path / "photos"), "--transform", "imagenet"]
    single, workers = trained_weights(tmp_path, args, 0), trained_weights(tmp_path, args, 2)
    assert single.keys() == workers.keys()
    for key, value in single.items():
        assert torch.equal(value, workers[key]), key


def test_batched_keyed_augmentation_equals_the_keyed_augmentation_of_each_sample():
    dataset = data.build_dataset("digits", "train", image_size=32, augment=True)
    subset = Subset(dataset, list(range(3, 400, 3)))
    order = [7, 0, 55, 21, 21, 100, 9]
    batch = EpochSamples(subset, epoch_key=11).__getitems__(list(enumerate(order)))
    keys = sample_keys(11, range(len(order)))
    for (image, label), position, index in zip(batch, range(len(order)), order):
        expected, expected_label = dataset.sample(subset.indices[index], keys[position])
        assert torch.equal(image, expected) and label == expected_label
    assert not torch.equal(batch[3][0], batch[4][0])  # the same image at two positions: two draws


@pytest.mark.parametrize("source", ["in_memory", "jpeg_files"])
def test_keyed_loader_batches_do_not_depend_on_workers_or_on_iterators_made_before(tmp_path, source):
    dataset = training_set(source, tmp_path, per_class=16)
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0)).tolist()
    runs = []
    for workers in (0, 2):
        loader = DataLoader(EpochSamples(dataset, epoch_key=5), batch_size=16, sampler=PositionSampler(order),
                            num_workers=workers)
        iter(loader)  # made and dropped, as a progress bar may do
        runs.append(list(loader))
    for (x, y), (x_ref, y_ref) in zip(*runs):
        assert torch.equal(x, x_ref) and torch.equal(y, y_ref)
    other = list(DataLoader(EpochSamples(dataset, epoch_key=6), batch_size=16, sampler=PositionSampler(order)))
    assert not torch.equal(other[0][0], runs[0][0][0])  # another epoch: other draws


def test_epoch_samples_refuses_a_dataset_it_cannot_key():
    with pytest.raises(TypeError, match="ImageDataset"):
        EpochSamples(torch.utils.data.TensorDataset(torch.zeros(3, 1)), epoch_key=0)


@pytest.mark.parametrize("source", ["in_memory", "jpeg_files"])
def test_uint8_batches_normalized_after_the_loader_equal_batches_normalized_in_it(tmp_path, source):
    dataset = training_set(source, tmp_path, per_class=6)
    order = list(range(len(dataset)))[::-1]
    normalized = list(DataLoader(EpochSamples(dataset, epoch_key=2), batch_size=8, sampler=PositionSampler(order)))
    epoch = EpochSamples(Subset(dataset, range(len(dataset))), epoch_key=2, uint8=True)
    loader = DataLoader(epoch, batch_size=8, sampler=PositionSampler(order), num_workers=1)
    assert next(iter(loader))[0].dtype == torch.uint8 and epoch.normalize is dataset.transform.transforms[-1]
    later = list(DeviceBatches(loader, epoch.normalize, torch.device("cpu")))
    assert len(later) == len(normalized) == -(-len(dataset) // 8)
    for (x, y), (x_ref, y_ref) in zip(later, normalized):
        assert x.dtype == torch.float32 and x.shape[1] == 3
        assert torch.equal(x, x_ref) and torch.equal(y, y_ref)



def test_a_torchvision_random_step_is_keyed_too_and_leaves_the_global_generator_alone():
    from torchvision.transforms import v2

    dataset = data.build_dataset("digits", "train", image_size=16, augment=False, max_per_class=4)
    dataset.transform = v2.Compose([v2.RandomResizedCrop(12, antialias=True), v2.RandomHorizontalFlip()])
    torch.manual_seed(0)
    state = torch.get_rng_state()
    items = [(position, 3) for position in range(6)]  # one image at six positions
    first, again = (EpochSamples(dataset, epoch_key=1).__getitems__(items) for _ in range(2))
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again))
    assert len({tuple(x.flatten().tolist()) for x, _ in first}) > 1
