"""The `finetrack ui` and `finetrack deploy` subcommands: the MLflow UI as one process group
that Ctrl-C and SIGTERM stop whole, and the Prefect work pool and deployments."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tasks.stop_request import raise_keyboard_interrupt

ROOT = Path(__file__).resolve().parents[1]


def ui(args: argparse.Namespace) -> int:
    """The MLflow UI over the configured tracking store, on 127.0.0.1, until Ctrl-C or SIGTERM
    stop it with every process it started."""
    from tasks.tracking import TRAINING_VIEW, experiment_page, redact, resolve_tracking_uri

    uri = resolve_tracking_uri(args.tracking_uri)
    if uri.startswith(("http://", "https://")):
        address = f"{redact(uri).rstrip('/')}/#/experiments?{TRAINING_VIEW}"
        print(f"the tracking server {redact(uri)} serves its own UI: open {address}")
        return 0
    address = f"http://127.0.0.1:{args.port}"
    print(f"MLflow UI over {redact(uri)} on {address} (Ctrl-C stops it)")
    page = experiment_page(address, uri, args.experiment_name)
    print(f"experiment {args.experiment_name!r}, training view: {page}", flush=True)
    mlflow = str(Path(sys.executable).parent / "mlflow")
    command = [mlflow, "ui", "--host", "127.0.0.1", "--port", str(args.port)]
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, raise_keyboard_interrupt)
    # A session of its own: the server, its uvicorn workers and job runners are then one
    # process group, stopped together; a terminal's Ctrl-C reaches only this process.
    server = subprocess.Popen([*command, "--backend-store-uri", uri], start_new_session=True)
    try:
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)  # a second Ctrl-C must not cut the stop short
        stop_process_group(server)


def stop_process_group(process: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGTERM to the process group that `process` leads, SIGKILL to what is left of it
    after `grace` seconds; returns once the group is empty (or 5 s after SIGKILL)."""
    for signum, seconds in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signum)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            process.poll()  # reap the leader: unreaped, it would keep the group alive
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def deploy(args: argparse.Namespace) -> int:
    """The work pool (if missing) and every deployment of deployment.yaml; safe to repeat."""
    prefect = str(Path(sys.executable).parent / "prefect")
    env = {**os.environ, "FINETRACK_HOME": str(ROOT), "PREFECT_CLI_PROMPT": "false"}

    def call(*words: str) -> subprocess.CompletedProcess:
        return subprocess.run([prefect, *words], env=env, cwd=ROOT, capture_output=True, text=True)

    if call("work-pool", "inspect", args.pool).returncode != 0:
        created = call("work-pool", "create", args.pool, "--type", "process")
        if created.returncode != 0:
            print(f"error: cannot create work pool {args.pool}:\n{created.stderr}", file=sys.stderr)
            return 1
        print(f"work pool {args.pool!r} created")
    deployed = call("deploy", "--prefect-file", str(ROOT / "deployment.yaml"), "--all")
    if deployed.returncode != 0:
        print(f"error: prefect deploy failed:\n{deployed.stdout}{deployed.stderr}", file=sys.stderr)
        return 1
    print(f"deployments of {ROOT / 'deployment.yaml'} are up to date; start a worker with")
    print(f"  FINETRACK_HOME={ROOT} {prefect} worker start --pool {args.pool}")
    return 0
