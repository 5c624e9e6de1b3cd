"""Image files to uint8 tensors 3 x H x W: the exact decode, and the fast JPEG decode of training crops.

- :func:`read_image` is the exact decode, every pixel as PIL gives it (the official code's
  ``Image.open(f).convert("RGB")``), except where that would be silently wrong: 16-bit images
  (PIL modes ``I;16*``, and ``I`` from a PNG, whose only wider mode is 16-bit) are scaled from
  their real range 0..65535 to 0..255 (x / 257, rounded; ``convert("RGB")`` clips them, turning
  most pixels white); 32-bit integer and float images, whose range the file does not state, are
  refused; an image larger than PIL's decompression-bomb limit is refused. Each refusal is one
  :class:`DatasetError` line naming the file.
- :func:`decode_jpeg` decodes a JPEG with libjpeg-turbo through ``simplejpeg`` (the library PIL
  uses, with the same accurate integer IDCT and smooth chroma upsampling: at full scale its pixels
  equal PIL's), optionally at 1/2, 1/4 or 1/8 scale, which libjpeg-turbo computes in the DCT
  domain for a fraction of the work (the pixels PIL's ``draft`` mode gives). :func:`dct_scale` says which scale a training crop allows:
  the largest whose scaled crop still covers the output size, so the crop is still resized down.
  It returns None for anything it does not decode (not a JPEG, CMYK, a recoverable corruption),
  which the caller then reads with :func:`read_image`.
"""
from __future__ import annotations

import math
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

try:  # the fast decode; without it every image is read by PIL
    import simplejpeg
except ImportError:  # pragma: no cover - simplejpeg is a pinned dependency
    simplejpeg = None

#: DCT-domain scale factors libjpeg-turbo decodes with its fast reduced IDCTs (1, 1/2, 1/4, 1/8).
DCT_SCALES = (8, 4, 2, 1)
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


class DatasetError(ValueError):
    """A dataset's files are missing or malformed; the message names the path and what belongs there."""


def read_bytes(path: str, name: str) -> bytes:
    """The file's content; a missing or unreadable file is one :class:`DatasetError` line."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise DatasetError(f"{name}: image {path} is missing; restore it or rebuild the dataset folder") from None
    except OSError as error:
        raise DatasetError(f"{name}: {path} cannot be read ({error}); check its permissions or replace it") from None


def check_size(height: int, width: int, path: str, name: str) -> None:
    """Refuse an image larger than PIL's decompression-bomb limit (2 x ``Image.MAX_IMAGE_PIXELS``)."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and height * width > 2 * limit:
        raise DatasetError(f"{name}: {path} claims {width} x {height} pixels, more than PIL decodes "
                           f"({2 * limit} pixels: a decompression bomb or a damaged header); replace or remove it")


def rgb_pixels(image: Image.Image, path: str, name: str) -> np.ndarray:
    """An opened PIL image as uint8 H x W x 3, 16-bit images scaled by their real range (see module doc)."""
    mode = image.mode
    if mode in _SIXTEEN_BIT or (mode == "I" and image.format == "PNG"):
        wide = np.asarray(image, dtype=np.uint32)
        gray = ((wide + 128) // 257).astype(np.uint8)  # round(x / 257): 0..65535 -> 0..255
        return np.repeat(gray[..., None], 3, axis=2)
    if mode in ("I", "F"):
        kind = "32-bit integer" if mode == "I" else "floating-point"
        raise DatasetError(f"{name}: {path} holds {kind} pixels (PIL mode {mode}), whose range the file does not "
                           f"state; convert it to 8-bit (or 16-bit) RGB or grayscale")
    return np.array(image.convert("RGB"))


def read_image(path: str, name: str) -> torch.Tensor:
    """The exact decode of an image file (any format PIL reads) as uint8 3 x H x W; see the module doc."""
    try:
        with Image.open(path) as image:
            check_size(image.height, image.width, path, name)
            pixels = rgb_pixels(image, path, name)
    except FileNotFoundError:
        raise DatasetError(f"{name}: image {path} is missing; restore it or rebuild the dataset folder") from None
    except Image.DecompressionBombError as error:
        raise DatasetError(f"{name}: {path} is too large for PIL ({error}); replace or remove it") from None
    except (UnidentifiedImageError, OSError) as error:
        raise DatasetError(f"{name}: {path} is not a readable image ({error}); replace or remove it") from None
    return torch.from_numpy(pixels).permute(2, 0, 1)


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from a JPEG header that :func:`decode_jpeg` can decode, else None."""
    if simplejpeg is None or data[:2] != b"\xff\xd8":
        return None
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    return (height, width) if colorspace in ("Gray", "YCbCr") else None


def dct_scale(crop_height: int, crop_width: int, size: tuple[int, int]) -> int:
    """The largest factor s of :data:`DCT_SCALES` whose scaled crop (crop / s) is at least ``size``
    (height, width) on both sides, so decoding at 1/s changes no crop into an upscale."""
    for scale in DCT_SCALES:
        if crop_height >= scale * size[0] and crop_width >= scale * size[1]:
            return scale
    return 1


def decode_jpeg(data: bytes, height: int, width: int, scale: int = 1) -> torch.Tensor | None:
    """A JPEG of ``height`` x ``width`` (from :func:`jpeg_size`) decoded at 1/``scale`` as uint8
    3 x ceil(height / scale) x ceil(width / scale) (a channels-last view), or None where libjpeg-turbo
    reports a problem (the caller reads the file with PIL, which then names the problem or tolerates it)."""
    kwargs = {}
    if scale > 1:
        kwargs = dict(min_factor=scale, min_height=math.ceil(height / scale), min_width=math.ceil(width / scale))
    try:
        pixels = simplejpeg.decode_jpeg(data, colorspace="RGB", **kwargs)
    except ValueError:
        return None
    return torch.from_numpy(pixels).permute(2, 0, 1)
