"""Reader for the IDX format of MNIST and Fashion-MNIST (LeCun et al.), plain or gzipped.

Layout: two zero bytes, a type byte (0x08 = unsigned byte, the only type these datasets use),
a byte giving the number of dimensions d, d big-endian uint32 sizes, then the data row-major.
"""
from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from data.dataset import DatasetError

_UBYTE = 0x08


def read_idx(path: str | Path, ndim: int, name: str = "idx") -> np.ndarray:
    """The uint8 array stored in IDX file ``path``, which must have ``ndim`` dimensions.

    Raises :class:`DatasetError` (naming the file) when the file is not such an IDX file.
    """
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:
        raise DatasetError(f"{name}: {path} is not a readable gzip file ({error}); replace it with the original download") from None
    header = 4 + 4 * ndim
    if len(raw) < header or raw[0] != 0 or raw[1] != 0 or raw[2] != _UBYTE or raw[3] != ndim:
        raise DatasetError(f"{name}: {path} is not an IDX file of {ndim}-d unsigned bytes (bad magic number {raw[:4].hex()}); "
                           "replace it with the original download")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header != expected:
        raise DatasetError(f"{name}: {path} holds {len(raw) - header} data bytes but its header {dims} needs {expected}; "
                           "the file is truncated or corrupt, replace it with the original download")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)
