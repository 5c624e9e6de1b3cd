"""Image decoding through the real datasets: never silently wrong (16-bit and float images, headers
that claim huge sizes), and the fast JPEG decode of training crops against PIL's exact decode."""
import io
import struct
import zlib

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

import data
from data.decode import DCT_SCALES, dct_scale, decode_jpeg, jpeg_size, read_image
from data.transforms import RandomResizedCropFlip, build_transform

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def photo(name: str, width: int, height: int) -> Image.Image:
    """A scikit-image photograph, centre-cropped to the aspect ratio and resized to width x height."""
    image = Image.fromarray(getattr(skimage.data, name)())
    scale = min(image.width / width, image.height / height)
    w, h = width * scale, height * scale
    box = ((image.width - w) / 2, (image.height - h) / 2, (image.width + w) / 2, (image.height + h) / 2)
    return image.resize((width, height), Image.BICUBIC, box=box)


def jpeg_bytes(image: Image.Image, quality: int = 90, subsampling: int = 2) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality, subsampling=subsampling)
    return out.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height RGB pixels (with an empty image-data chunk)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real JPEG whose frame header (SOF0) is rewritten to claim width x height."""
    content = bytearray(jpeg_bytes(photo("coffee", 64, 48)))
    sof = content.index(b"\xff\xc0")
    content[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(content)


def folder_of(tmp_path, files: dict) -> "data.ImageDataset":
    """An imagefolder training split holding ``files`` ({name: bytes or PIL image}) in one class."""
    (tmp_path / "a").mkdir()
    for name, content in files.items():
        if isinstance(content, bytes):
            (tmp_path / "a" / name).write_bytes(content)
        else:
            content.save(tmp_path / "a" / name)
    return data.build_dataset("imagefolder", "train", root=tmp_path, image_size=32, augment=True)


def test_a_16_bit_png_is_scaled_from_its_real_range_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 64).round().astype(np.uint16).reshape(64, 64)
    dataset = folder_of(tmp_path, {"deep.png": Image.fromarray(ramp)})
    assert Image.open(dataset.paths[0]).mode == "I;16"
    assert (np.asarray(Image.open(dataset.paths[0]).convert("RGB")) == 255).mean() > 0.99  # what PIL alone gives
    pixels = dataset.image(0)
    assert pixels.shape == (3, 64, 64) and pixels.dtype == torch.uint8
    expected = np.floor(ramp / 257 + 0.5).astype(np.uint8)
    assert np.array_equal(pixels[0].numpy(), expected) and torch.equal(pixels[0], pixels[2])
    assert (pixels == 255).float().mean() < 0.01 and len(torch.unique(pixels)) == 256
    image, _ = dataset[0]
    assert image.shape == (3, 32, 32) and torch.isfinite(image).all()


@pytest.mark.parametrize("array, mode", [(np.random.default_rng(0).random((8, 8), dtype=np.float32), "F"),
                                         (np.arange(64, dtype=np.int32).reshape(8, 8) * 70000, "I")])
def test_float_and_32_bit_images_are_refused_in_one_line_naming_the_file(tmp_path, array, mode):
    dataset = folder_of(tmp_path, {"wide.tif": Image.fromarray(array)})
    assert Image.open(dataset.paths[0]).mode == mode
    for augment in (True, False):  # the training and the evaluation transform
        dataset.transform = build_transform(augment, 32, "imagenet")
        with pytest.raises(data.DatasetError) as error:
            dataset[0]
        message = str(error.value)
        assert "\n" not in message and dataset.paths[0] in message and f"mode {mode}" in message


@pytest.mark.parametrize("name, content", [("bomb.png", png_claiming(20000, 20000)),
                                           ("bomb.jpg", jpeg_claiming(20000, 20000))])
def test_a_header_claiming_20000_x_20000_is_one_line_naming_the_file(tmp_path, name, content):
    dataset = folder_of(tmp_path, {name: content})
    for augment, fast in ((True, True), (True, False), (False, True)):  # fast decode, PIL, evaluation
        dataset.transform, dataset.fast_decode = build_transform(augment, 32, "imagenet"), fast
        with pytest.raises(data.DatasetError) as error:
            dataset.sample(0, key=7)
        message = str(error.value)
        assert "\n" not in message and dataset.paths[0] in message
        assert "20000 x 20000" in message or "400000000 pixels" in message


def test_a_damaged_jpeg_is_one_line_on_the_fast_path_too(tmp_path):
    content = jpeg_bytes(photo("chelsea", 120, 90))
    dataset = folder_of(tmp_path, {"cut.jpg": content[:200], "noise.jpg": b"\xff\xd8" + bytes(range(256)) * 4})
    for index in range(2):
        with pytest.raises(data.DatasetError, match="is not a readable image") as error:
            dataset.sample(index, key=3)
        assert "\n" not in str(error.value)


def test_full_scale_fast_decode_gives_pils_pixels_for_every_chroma_layout_and_grayscale():
    image = photo("astronaut", 120, 90)
    for content in [jpeg_bytes(image, q, s) for q, s in ((75, 2), (95, 1), (85, 0))] + [jpeg_bytes(image.convert("L"))]:
        size = jpeg_size(content)
        assert size == (90, 120)
        exact = torch.from_numpy(np.array(Image.open(io.BytesIO(content)).convert("RGB"))).permute(2, 0, 1)
        assert torch.equal(decode_jpeg(content, *size), exact)


def test_jpegs_libjpeg_turbo_does_not_decode_go_to_pil():
    cmyk = io.BytesIO()
    photo("coffee", 40, 30).convert("CMYK").save(cmyk, "JPEG")
    png = io.BytesIO()
    photo("coffee", 40, 30).save(png, "PNG")
    assert jpeg_size(cmyk.getvalue()) is None and jpeg_size(png.getvalue()) is None


def test_dct_scale_keeps_the_scaled_crop_at_least_the_output_size():
    for height, width in ((100, 100), (447, 500), (448, 448), (900, 2000), (1792, 1800), (5000, 300)):
        scale = dct_scale(height, width, (224, 224))
        assert scale in DCT_SCALES
        assert scale == 1 or (height / scale >= 224 and width / scale >= 224)
        larger = [s for s in DCT_SCALES if s > scale]
        assert all(height / s < 224 or width / s < 224 for s in larger)


def imagenet_folder(tmp_path, sizes) -> "data.ImageDataset":
    """One JPEG per photograph, at the listed sizes in turn, quality 75 to 90."""
    files = {f"{name}.jpg": jpeg_bytes(photo(name, *sizes[i % len(sizes)]), 75 + 5 * i) for i, name in enumerate(PHOTOS)}
    return folder_of(tmp_path, files)


def test_at_imagenet_sizes_the_fast_training_crop_equals_the_pil_decoded_one(tmp_path):
    """500 x 375 photographs, 224-px crops: no crop allows a reduced scale, and the pixels are PIL's."""
    dataset = imagenet_folder(tmp_path, [(500, 375), (375, 500)])
    dataset.transform = build_transform(True, 224, "imagenet", interpolation="bilinear")
    for index in range(len(dataset)):
        for key in (index, 1000 + index, 2000 + index):
            fast, label = dataset.sample(index, key)
            dataset.fast_decode = False
            exact, same_label = dataset.sample(index, key)
            dataset.fast_decode = True
            assert torch.equal(fast, exact) and label == same_label


def test_reduced_scale_decode_keeps_the_drawn_crop_and_changes_pixels_little(tmp_path):
    """Small outputs from larger photographs: most crops decode at 1/2 or 1/4; each crop box is the one
    drawn (the reduced image is cut at the box's fractional place), so the pixels differ only by where
    the downscale happens (the DCT domain instead of the resize filter)."""
    dataset = imagenet_folder(tmp_path, [(500, 375)])
    size = 48
    dataset.transform = build_transform(True, size, "imagenet", interpolation="bilinear")
    crop = dataset.transform.transforms[0]
    scales, diffs = [], []
    for index in range(len(dataset)):
        for key in range(index * 10, index * 10 + 10):
            box = crop.draw(375, 500, [key])
            scales.append(dct_scale(box.height, box.width, crop.size))
            fast = dataset.decode_crop(index, crop, [key]).float()
            exact = crop.crop(read_image(dataset.paths[index], "t"), box).float()
            diffs.append((fast - exact).abs().mean().item())
    assert {2, 4} <= set(scales)
    assert max(diffs) < 6 and np.mean(diffs) < 2.5  # in 0..255 levels; a half-pixel shift of the crop gives 5-10


def test_the_keyed_crop_follows_torchvisions_distribution(tmp_path):
    """Box and flip drawn from keys: the same distribution as torchvision's RandomResizedCrop + flip."""
    from scipy.stats import ks_2samp

    crop = RandomResizedCropFlip(224)
    keyed = np.array([crop.draw(375, 500, [k]) for k in range(2000)], dtype=float)
    torch.manual_seed(0)
    reference = np.array([crop.draw(375, 500) for _ in range(2000)], dtype=float)
    for column in range(4):  # top, left, height, width
        assert ks_2samp(keyed[:, column], reference[:, column]).pvalue > 1e-3
    assert abs(keyed[:, 4].mean() - 0.5) < 0.05
    assert len({tuple(row) for row in keyed}) > 1900  # neighbouring keys give unrelated boxes
