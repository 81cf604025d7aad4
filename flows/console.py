"""What a person sees on the terminal when a flow runs from the command line.

By default: the project's own messages (data summary, training progress, per-epoch metrics,
the result and where to look) as plain lines, and warnings. Prefect's per-task state lines
and library chatter stay out of the terminal but not out of Prefect: every handler that
sends logs to the Prefect API is kept. `--verbose` leaves every library's logging as it is.
"""

from __future__ import annotations

import logging
import os
import sys

PROJECT_LOGGERS = ("tasks", "flows")


class _HidePrefectChatter(logging.Filter):
    """Prefect's own INFO lines, and the flow/task run failure reports whose message the
    command line prints as one `error:` line (a crash still ends in Python's traceback)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith(("prefect.flow_runs", "prefect.task_runs")):
            return record.levelno >= logging.CRITICAL
        if record.name.startswith("prefect"):
            return record.levelno >= logging.WARNING
        return True


_configured = False


def configure_output(verbose: bool) -> None:
    """Plain project messages on stdout; Prefect's console lines filtered unless verbose.
    Once per process: a second command in the same process keeps the first one's setup."""
    global _configured
    if _configured:
        return
    _configured = True
    from prefect.logging.configuration import ensure_logging_setup

    if verbose:
        return
    ensure_logging_setup()  # Prefect's handlers exist from here on, to be filtered below
    for handler in logging.getLogger().handlers:
        handler.addFilter(_HidePrefectChatter())
    plain = logging.StreamHandler(sys.stdout)
    plain.setFormatter(logging.Formatter("%(message)s"))
    for name in PROJECT_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.addHandler(plain)
        logger.propagate = False  # Prefect's API handler stays attached to the logger itself


def quiet_libraries(verbose: bool) -> None:
    """Progress bars and chatter of the ML libraries off, unless verbose. Separate from
    `configure_output` because importing them takes seconds: the command calls this once
    the flow's own imports have brought them in."""
    if verbose:
        return
    import datasets
    from transformers.utils import logging as transformers_logging

    datasets.disable_progress_bars()  # tokenization is timed and reported in one line
    transformers_logging.disable_progress_bar()  # weight loading, twice a run (not training)
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # store migrations, signature checks
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # model loads for scoring
