"""The `finetrack` command: one subcommand per flow, plus `ui` and `deploy`.

Every flag of `fine-tune`, `search`, `retrain`, `predict` and `reproduce` is generated from the
typed config that validates it (name, help text, default), so the command line cannot drift from
the config. Bad input prints one `error:` line and exits with 2 before any work starts (the
traceback too with `--verbose`); SIGTERM stops the work like Ctrl-C, so that open MLflow
runs are closed as KILLED. `ui` and `deploy` live in flows/services.py.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel

from flows.services import deploy, ui
from tasks.config import (
    FineTuneConfig,
    PredictConfig,
    ReproduceConfig,
    RetrainConfig,
    SearchConfig,
    read_yaml,
    validated,
)
from tasks.errors import BAD_INPUT
from tasks.stop_request import raise_keyboard_interrupt


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def fields(model: type[BaseModel], outer: type[BaseModel] | None = None) -> dict[str, Any]:
    """The settings of `model` that get a flag: not a nested `train` part (its FineTuneConfig
    flags come separately), nor one that the outer config (`outer`) defines itself."""
    skip = set(outer.model_fields) if outer else set()
    return {
        name: field
        for name, field in model.model_fields.items()
        if field.annotation is not FineTuneConfig and name not in skip
    }


def add_config_arguments(
    parser: argparse.ArgumentParser, model: type[BaseModel], outer: type[BaseModel] | None = None
) -> None:
    """One `--flag` per config field, help text taken from the field description. Flags
    arrive as strings that pydantic converts and validates; booleans need words."""
    group = parser.add_argument_group(f"{model.__name__} settings")
    for name, field in fields(model, outer).items():
        default = field.default_factory() if field.default_factory else field.default
        choices = get_args(field.annotation) if get_origin(field.annotation) is Literal else ()
        group.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=_parse_bool if field.annotation is bool else str,
            default=None,
            metavar="{" + ",".join(map(str, choices)) + "}" if choices else name.upper(),
            help=f"{field.description} [default: {default}]".replace("%", "%%"),  # argparse
        )


def given(
    namespace: argparse.Namespace, model: type[BaseModel], outer: type[BaseModel] | None = None
) -> dict[str, Any]:
    """Only the flags the user gave, so that they override the YAML file and nothing else."""
    return {
        name: getattr(namespace, name)
        for name in fields(model, outer)
        if getattr(namespace, name, None) is not None
    }


def build_config(namespace: argparse.Namespace, model: type[BaseModel]) -> BaseModel:
    """The config from flags over the `--config` YAML file; for a model with a `train` part
    (search, retrain) the fine-tune flags go into `train`."""
    values = read_yaml(namespace.config)
    if "train" in model.model_fields:
        train = {**values.get("train", {}), **given(namespace, FineTuneConfig, model)}
        values.update(given(namespace, model), train=train)
    else:
        values.update(given(namespace, model))
    return validated(model, values)


def _config_only(flow: Callable, config: BaseModel, args: argparse.Namespace) -> object:
    return flow(config)


def _success(result: object) -> int:
    return 0


@dataclass(frozen=True)
class FlowCommand:
    """A subcommand that validates a config and runs one flow with it.

    The flow is named `module:function` and imported only when the command runs: its
    libraries (torch, transformers) take seconds to import, which is when the embedded
    Prefect server comes up (`start_embedded_api`)."""

    help: str
    model: type[BaseModel]
    flow: str
    call: Callable[[Callable, Any, argparse.Namespace], object] = _config_only
    status: Callable[[object], int] = _success  # the exit status from the flow's result

    def load(self) -> Callable:
        module, name = self.flow.split(":")
        return getattr(importlib.import_module(module), name)


def _search(flow: Callable, config: SearchConfig, args: argparse.Namespace) -> object:
    return flow(config, force=args.force)


def _reproduce(flow: Callable, config: ReproduceConfig, args: argparse.Namespace) -> object:
    return flow(args.run_id, config, allow_data_change=args.allow_data_change)


def _verdict_status(verdict) -> int:
    """0 when a reproduction's result holds, 1 when it differs."""
    return verdict.exit_code


FLOWS = {
    "fine-tune": FlowCommand(
        "Fine-tune a text classifier and record it in MLflow.",
        FineTuneConfig,
        "flows.fine_tune:fine_tune",
    ),
    "search": FlowCommand(
        "Search hyperparameters with Optuna; every trial is a nested MLflow run.",
        SearchConfig,
        "flows.search:search_flow",
        _search,
    ),
    "search-worker": FlowCommand(
        "Run trials of a study that `finetrack search` opened (what its workers run).",
        SearchConfig,
        "flows.search_worker:search_worker",
    ),
    "retrain": FlowCommand(
        "Retrain on current data; promote the new model only if it beats the champion.",
        RetrainConfig,
        "flows.retrain:retrain",
    ),
    "predict": FlowCommand(
        "Classify a file with a registered model.", PredictConfig, "flows.predict:predict"
    ),
    "reproduce": FlowCommand(
        "Re-run a recorded run from its record and say whether its result holds.",
        ReproduceConfig,
        "flows.reproduce:reproduce",
        _reproduce,
        _verdict_status,
    ),
}


def start_embedded_api() -> Callable[[], None]:
    """Start Prefect's embedded API server in the background; returns the wait for it.

    Without `PREFECT_API_URL` Prefect starts a server process at the first flow call and
    waits for it, about 5 s on two cores. Started before the flow's libraries are imported,
    it comes up on the other core meanwhile; the flow then finds it running."""
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if settings.api.url or not settings.server.ephemeral.enabled:
        return lambda: None
    from prefect.server.api.server import SubprocessASGIServer

    starting = threading.Thread(
        target=SubprocessASGIServer().start, name="prefect-api-start", daemon=True
    )
    starting.start()
    return starting.join


def parser() -> argparse.ArgumentParser:
    """`finetrack SUBCOMMAND --help` lists every setting with its default."""
    top = argparse.ArgumentParser(
        prog="finetrack",
        description="Fine-tune Hugging Face text classifiers; every experiment on the record.",
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in FLOWS.items():
        sub = commands.add_parser(name, help=command.help, description=command.help)
        sub.add_argument("--config", type=Path, help="YAML file with settings (flags win).")
        sub.add_argument("--verbose", action="store_true", help="Library logs and tracebacks too.")
        add_config_arguments(sub, command.model)
        if "train" in command.model.model_fields:
            add_config_arguments(sub, FineTuneConfig, command.model)
        if name == "search":
            sub.add_argument(
                "--force", action="store_true", help="Continue a study whose space changed."
            )
        if name == "reproduce":
            sub.add_argument("run_id", metavar="RUN_ID", help="The MLflow run to reproduce.")
            sub.add_argument(
                "--allow-data-change",
                action="store_true",
                help="Reproduce on data whose fingerprint differs from the run's (else refused).",
            )
    view = commands.add_parser("ui", help="MLflow UI over the configured tracking store.")
    view.add_argument("--tracking-uri", help="Default: $MLFLOW_TRACKING_URI or ./mlflow.db.")
    view.add_argument("--port", type=int, default=5000)
    view.add_argument(
        "--experiment-name",
        default=FineTuneConfig.model_fields["experiment_name"].default,
        help="The experiment whose address is printed [default: %(default)s].",
    )
    pool = commands.add_parser("deploy", help="Create the work pool and the deployments.")
    pool.add_argument("--pool", default="local", help="Process work pool name [default: local].")
    return top


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `finetrack` console script."""
    args = parser().parse_args(argv)
    if args.command == "ui":
        return ui(args)
    if args.command == "deploy":
        return deploy(args)
    from flows.console import configure_output, quiet_libraries

    configure_output(verbose=args.verbose)
    command = FLOWS[args.command]
    try:
        config = build_config(args, command.model)
        signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
        wait_for_api = start_embedded_api()
        try:
            flow = command.load()
        finally:
            wait_for_api()  # a start that failed is retried, and reported, by the flow call
        quiet_libraries(verbose=args.verbose)
        result = command.call(flow, config, args)
    except BAD_INPUT as error:
        if args.verbose:
            traceback.print_exc()
        print(f"error: {error}", file=sys.stderr)
        return 2
    return command.status(result)


def flow_main(command: str) -> Callable[[list[str] | None], int]:
    """`python -m flows.X` as `finetrack X`."""

    def run(argv: list[str] | None = None) -> int:
        return main([command, *(sys.argv[1:] if argv is None else argv)])

    return run


if __name__ == "__main__":
    sys.exit(main())
