"""What every flow's command line shares: bad input gives a message and exit code 2, and
SIGTERM stops the work like Ctrl-C, so that open MLflow runs are closed as KILLED."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable

from tasks.config import ConfigError
from tasks.data import DataError
from tasks.model import ModelError
from tasks.prediction import NoModelError
from tasks.tracking import TrackingError

BAD_INPUT = (ConfigError, DataError, ModelError, NoModelError, TrackingError)


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def run_command(build: Callable[[], object], run: Callable[[object], object]) -> int:
    """Build the config, run the flow; user errors print one message and return 2."""
    try:
        config = build()
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        run(config)
    except BAD_INPUT as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
