"""Progress bars: tqdm, switched off per call (``show=False``, e.g. on non-main ranks) or for
the whole run with the environment variable ``TQDM_DISABLE=1`` (tqdm's own).

The plain terminal tqdm, not ``tqdm.auto``: the latter (``tqdm_asyncio``) calls ``iter()`` on the
iterable when the bar is made, which for a DataLoader with workers starts a second set of worker
processes that is thrown away (and draws a shuffle of its own)."""
from __future__ import annotations

from tqdm import tqdm


def progress(iterable=None, show: bool = True, **kwargs) -> tqdm:
    """``tqdm(iterable, **kwargs)``; ``show=False`` disables it, otherwise tqdm's environment
    defaults (``TQDM_DISABLE``, ``TQDM_MININTERVAL``, ...) apply."""
    if not show:
        kwargs["disable"] = True
    return tqdm(iterable, **kwargs)
