"""Where a study lives: an Optuna RDB storage (SQLite file by default, any SQLAlchemy URL such
as PostgreSQL) with heartbeats, so that a trial whose worker died is marked FAIL and the study
can be resumed or shared by several workers; and calls that outlast a database restart."""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable
from typing import TypeVar

import optuna
import sqlalchemy.exc
from optuna.trial import FrozenTrial

from tasks.config import SearchConfig
from tasks.tracking import sqlite_creation_lock

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_STORAGE = "sqlite:///optuna.db"
DB_RETRY_SECONDS = (1, 2, 4, 8, 16)  # about half a minute: a database server's restart
CREATION_RETRY_SECONDS = (0.5, 1, 2)  # workers creating a new study database at once


def resolve_storage(configured: str | None) -> str:
    """Config first, then $OPTUNA_STORAGE, then a SQLite file in the working folder."""
    return configured or os.environ.get("OPTUNA_STORAGE") or DEFAULT_STORAGE


def make_storage(
    config: SearchConfig, on_stale_trial: Callable[[optuna.Study, FrozenTrial], None] | None
) -> optuna.storages.RDBStorage:
    """RDB storage with heartbeats; `on_stale_trial` runs for each trial found dead."""
    url = resolve_storage(config.storage)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 60}}
    else:  # a database server may restart: test pooled connections before use
        engine_kwargs = {"pool_pre_ping": True}

    def open_storage() -> ResilientStorage:
        return ResilientStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=config.heartbeat_interval,
            grace_period=config.grace_period,
            heartbeat_stale_trial_callback=on_stale_trial,
        )

    with sqlite_creation_lock(url):
        for pause in CREATION_RETRY_SECONDS:
            try:
                return open_storage()
            except sqlalchemy.exc.DatabaseError as error:
                if url.startswith("sqlite"):
                    raise
                # workers opening a new server database at once race to create its tables,
                # types and version row, one statement at a time: the loser's statement fails
                # on what the winner just made; the next try finds more of it there
                log.info("study tables being created by another worker (%s); opening again",
                         str(error.orig).strip().splitlines()[0])  # fmt: skip
                time.sleep(pause)
        return open_storage()


class ResilientStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage whose heartbeat survives a database restart.

    Optuna records heartbeats in a thread that ends at the first error: after a restart of
    the database server the trial would fall silent while still training, be declared lost
    and run twice. Here a failed beat is logged and the next one tried on time."""

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except optuna.exceptions.StorageInternalError as error:
            log.warning("trial heartbeat not recorded (%s); retrying", unreachable(error))


def unreachable(error: Exception) -> str | None:
    """What the database driver said, when Optuna's storage error is a lost connection."""
    cause = error.__cause__
    if isinstance(error, optuna.exceptions.StorageInternalError) and isinstance(
        cause, sqlalchemy.exc.OperationalError
    ):
        return str(cause.orig).strip().splitlines()[0]
    return None


def with_db_retries(call: Callable[[], T]) -> T:
    """`call()`, tried again while the study's database is unreachable (restarting)."""
    for pause in DB_RETRY_SECONDS:
        try:
            return call()
        except optuna.exceptions.StorageInternalError as error:
            if unreachable(error) is None:
                raise
            log.warning("study database unreachable (%s); retrying in %d s", unreachable(error),
                        pause)  # fmt: skip
            time.sleep(pause)
    return call()
