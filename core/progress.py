"""Progress bars: tqdm, switched off per call (``show=False``, e.g. on non-main ranks) or for
the whole run with the environment variable ``TQDM_DISABLE=1`` (tqdm's own)."""
from __future__ import annotations

from tqdm.auto import tqdm


def progress(iterable=None, show: bool = True, **kwargs) -> tqdm:
    """``tqdm(iterable, **kwargs)``; ``show=False`` disables it, otherwise tqdm's environment
    defaults (``TQDM_DISABLE``, ``TQDM_MININTERVAL``, ...) apply."""
    if not show:
        kwargs["disable"] = True
    return tqdm(iterable, **kwargs)
