"""Progress bars that suit both a terminal and a log file."""
from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm

# Seconds between updates when stderr is not a terminal (a job's log file, CI): tqdm's \r updates
# would otherwise add a line's worth of text ten times a second.
LOG_INTERVAL_S = 30.0


def progress(*args: Any, **kwargs: Any) -> tqdm:
    """``tqdm(*args, **kwargs)``, updating at most every ``LOG_INTERVAL_S`` seconds when stderr is not a
    terminal (a progress line in a log every half minute instead of a flood)."""
    if not _stderr_is_terminal():
        kwargs["mininterval"] = max(float(kwargs.get("mininterval", 0.1)), LOG_INTERVAL_S)
    return tqdm(*args, **kwargs)


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False
