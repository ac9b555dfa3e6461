"""transformers' own progress bars silenced inside a block (private floor module): the landscape
progress bars, ``optigrade landscape`` and ``run_unlearn(progress=False)`` use it."""

from __future__ import annotations

import contextlib
from typing import Iterator

__all__ = ["quiet_transformers", "maybe_quiet"]


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' own progress bars (``Loading checkpoint shards``, generation)
    inside the block via ``transformers.utils.logging.disable_progress_bar()``; on exit,
    also on exceptions, they are enabled again only if they were enabled before.

    >>> from transformers.utils import logging
    >>> with quiet_transformers():
    ...     logging.is_progress_bar_enabled()
    False
    """
    from transformers.utils import logging

    was = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            logging.enable_progress_bar()


def maybe_quiet(progress: bool):
    """:func:`quiet_transformers` when ``progress`` is False, else a no-op context."""
    return contextlib.nullcontext() if progress else quiet_transformers()
