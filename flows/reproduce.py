"""Reproduce flow: re-run a recorded run from its record and say whether its result holds.

`finetrack reproduce RUN_ID` (see `--help`). Before anything trains it checks the record
against this machine: other data are refused (unless allowed), another code version,
other library versions and a machine that resolves another recipe are warnings. The
recorded configuration then runs as a new fine-tune run in the run's experiment, tagged
`finetrack.reproduces`; the original is only read. The verdict (identical, within
tolerance, differs) is printed and recorded on the new run; the command exits with 0 when
the result holds, 1 when it differs and 2 when the reproduction is refused.
"""

from __future__ import annotations

import logging
import sys

from prefect import flow

from flows.cli import flow_main
from flows.fine_tune import fine_tune
from flows.steps import load_data, resolve_model
from tasks import reproduce as reproduction
from tasks import reproduction_verdict, tracking
from tasks.config import ReproduceConfig

log = logging.getLogger(__name__)


@flow(name="reproduce", flow_run_name="reproduce-{run_id}")
def reproduce(
    run_id: str, config: ReproduceConfig | None = None, allow_data_change: bool = False
) -> reproduction_verdict.Verdict:
    """Train the run `run_id` again from its record and compare the results."""
    config = config or ReproduceConfig()
    client = tracking.connect(config.tracking_uri)
    original = reproduction.read_original(client, run_id)
    train_config, changed = reproduction.rebuild_config(client, original, config.data_dir)
    log.info(
        "reproducing the %s run %s (%s): first its data, code, libraries and machine",
        original.kind, original.name, run_id,
    )  # fmt: skip
    model_path = resolve_model(
        train_config.model_name_or_path, train_config.freeze_layers, train_config.max_length
    )
    dataset = load_data(train_config)
    checks = reproduction.check(
        client, original, dataset, train_config, model_path, allow_data_change
    )
    for warning in checks.warnings:
        log.warning("warning: %s", warning)
    log.info("training it again, as a new run tagged %s", reproduction.REPRODUCES_TAG)
    result = fine_tune(train_config, tags={reproduction.REPRODUCES_TAG: run_id})
    verdict = reproduction_verdict.compare(client, original, result.run_id, checks, changed)
    reproduction_verdict.record(client, original, verdict)
    log.info("%s", verdict.text())
    return verdict


main = flow_main("reproduce")


if __name__ == "__main__":
    sys.exit(main())
