"""Logging set up once at the entry point; library modules only call ``logging.getLogger(__name__)``."""

from __future__ import annotations

import logging
import os

_warned: set[str] = set()


def init_logging(verbose: bool = False) -> None:
    """Configure the root logger for command-line use (idempotent)."""
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=False)
    logging.getLogger().setLevel(level)


def warn_once(logger: logging.Logger, message: str) -> None:
    """Log ``message`` as a warning the first time it is seen in this process."""
    if message not in _warned:
        _warned.add(message)
        logger.warning(message)


def log0(logger: logging.Logger, message: str, *args) -> None:
    """Log at INFO on global rank 0 only (``RANK`` unset counts as rank 0)."""
    if os.environ.get("RANK", "0") == "0":
        logger.info(message, *args)
