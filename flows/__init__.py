"""Prefect flows: thin recipes that wire the work in `tasks/` together.

Offline-friendly defaults are set before Prefect or MLflow is imported: no telemetry
(which fails offline and, for Prefect, locks its SQLite database), a patient start-up of
Prefect's embedded server on a busy two-core machine, and the project's loggers shown in
Prefect's logs. Each can be overridden from the environment.
"""

import logging
import os

for _name, _value in {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "PREFECT_LOGGING_EXTRA_LOGGERS": "tasks,flows",
    "TOKENIZERS_PARALLELISM": "false",
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
}.items():
    os.environ.setdefault(_name, _value)

# Row counts, cache hits, timings and results from the project are INFO messages worth seeing.
for _name in ("tasks", "flows"):
    logging.getLogger(_name).setLevel(logging.INFO)
