"""Reproduce a recorded run: rebuild its configuration from the record and say, before
training, what differs from when it ran (`tasks/reproduction_verdict.py` compares the numbers).

A fine-tune run (a search's confirmation runs are fine-tune runs) keeps its configuration as
`config.json`; a trial keeps the same settings as params. Both record the data fingerprint,
the library versions, the code and the machine (`tasks/provenance.py`), and the recipe the
machine resolved (`bf16_active`, `frozen_layers`). A study run trained nothing itself: it is
refused, with the runs under it that can be reproduced.
"""

from __future__ import annotations

import ast
import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tasks import provenance, tracking
from tasks.config import FineTuneConfig, validated
from tasks.data import LoadedData
from tasks.errors import RefusedError
from tasks.machine_recipe import layers_to_freeze, native_bf16, use_bf16
from tasks.model import load_model
from tasks.study_record import TRIAL_TAG

REPRODUCES_TAG = "finetrack.reproduces"
CONFIG_ARTIFACT = "config.json"
PREDICTIONS = re.compile(r"predictions_(?P<split>.+)\.csv")


@dataclass
class Original:
    """A recorded run to reproduce."""

    run: Run
    kind: str  # fine-tune, confirmation or trial
    experiment: str

    @property
    def run_id(self) -> str:
        return self.run.info.run_id

    @property
    def name(self) -> str:
        return self.run.info.run_name


def read_original(client: MlflowClient, run_id: str) -> Original:
    """The run, if it trained a model that can be trained again and recorded something to
    compare; a study run is refused with the runs under it."""
    try:
        run = client.get_run(run_id)
    except MlflowException:
        store = tracking.redact(client.tracking_uri)
        raise RefusedError(f"no run {run_id} in the tracking store {store}") from None
    tags = run.data.tags
    experiment = client.get_experiment(run.info.experiment_id).name
    if tags.get("finetrack.flow") == "search":
        children = client.search_runs(
            [run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{run_id}'"
        )
        names = ", ".join(f"{c.info.run_name} ({c.info.run_id})" for c in children) or "none yet"
        raise RefusedError(
            f"run {run_id} ({run.info.run_name}) is a study: it trained nothing itself; its "
            f"trial and confirmation runs can be reproduced: {names}"
        )
    if TRIAL_TAG in tags:
        kind = "trial"
    elif tags.get("finetrack.flow") == "fine-tune":
        kind = "confirmation" if "finetrack.confirm_of_trial" in tags else "fine-tune"
    else:
        raise RefusedError(
            f"run {run_id} ({run.info.run_name}) is not a fine-tune, trial or confirmation run"
        )
    original = Original(run, kind, experiment)
    if not client.get_metric_history(run_id, "eval_loss") and not prediction_files(client, run):
        raise RefusedError(
            f"run {run_id} ({run.info.run_name}) recorded no epoch and no predictions: "
            "nothing to compare a reproduction with"
        )
    return original


def prediction_files(client: MlflowClient, run: Run) -> dict[str, str]:
    """Split name -> `predictions_<split>.csv` among the run's artifacts."""
    found = (PREDICTIONS.fullmatch(a.path) for a in client.list_artifacts(run.info.run_id))
    return {match["split"]: match.group(0) for match in found if match}


def _settings_from_params(params: dict[str, str]) -> dict[str, object]:
    """FineTuneConfig settings back from their `str()` in the params (`FineTuneConfig.params`):
    pydantic reads numbers, booleans and paths from text; None and lists are spelt in Python."""
    values: dict[str, object] = {}
    for name in FineTuneConfig.model_fields.keys() & params.keys():
        text = params[name]
        values[name] = None if text == "None" else text
        if text.startswith("["):
            values[name] = ast.literal_eval(text)
    return values


def recorded_settings(client: MlflowClient, original: Original) -> dict[str, object]:
    """The configuration the run trained with: its `config.json`, else its params (a trial)."""
    run_id = original.run_id
    if any(a.path == CONFIG_ARTIFACT for a in client.list_artifacts(run_id)):
        with tempfile.TemporaryDirectory() as folder:
            path = client.download_artifacts(run_id, CONFIG_ARTIFACT, folder)
            values = json.loads(Path(path).read_text(encoding="utf-8"))
    else:
        values = _settings_from_params(original.run.data.params)
    # the default pair column is optional (single-sentence data); written out it is required
    if values.get("text_pair_column") == FineTuneConfig.model_fields["text_pair_column"].default:
        del values["text_pair_column"]
    return values


def rebuild_config(
    client: MlflowClient, original: Original, data_dir: Path | None
) -> tuple[FineTuneConfig, dict[str, list]]:
    """The run's configuration, changed only where a reproduction must differ: the data where
    they are now (`data_dir`, else the absolute folder recorded as `data_source`), this store
    and the run's experiment, a name of its own, no model logged or registered, the thread
    count the run trained with (fp32 sums depend on it), and the precision and frozen layers
    its 'auto' settings resolved to (`pinned_recipe`). Returns the config and each changed
    setting as [recorded, reproduction]."""
    values = recorded_settings(client, original)
    params, tags = original.run.data.params, original.run.data.tags
    source = params.get("data_source", "")
    if data_dir is None and source and "://" not in source:  # a Hub data set stays as it was
        data_dir = Path(source)
    changes: dict[str, object] = {
        "tracking_uri": client.tracking_uri,
        "experiment_name": original.experiment,
        "run_name": f"reproduce-{original.name}",
        "registered_model_name": None,
        "log_model": False,
        "onnx_export": "none",
    }
    if data_dir is not None:
        changes["data_dir"] = str(data_dir)
    if provenance.THREADS in tags:
        changes["threads"] = int(tags[provenance.THREADS])
    changes |= pinned_recipe(values, params)
    changed = {
        name: [values.get(name), value]
        for name, value in changes.items()
        if str(values.get(name)) != str(value)
    }
    return validated(FineTuneConfig, {**values, **changes}), changed


def pinned_recipe(values: dict, params: dict[str, str]) -> dict[str, object]:
    """What the run's 'auto' precision and frozen layers resolved to, pinned: a later default
    or another machine would resolve them otherwise. bf16 stays 'auto' where this machine
    would emulate it (`check` then warns that the recipe differs)."""
    pinned: dict[str, object] = {}
    if str(values.get("bf16")) == "auto" and "bf16_active" in params:
        ran_bf16 = params["bf16_active"] == "True"
        if not ran_bf16 or native_bf16():
            pinned["bf16"] = "on" if ran_bf16 else "off"
    if str(values.get("freeze_layers")) == "auto" and "frozen_layers" in params:
        pinned["freeze_layers"] = int(params["frozen_layers"])
    return pinned


def recorded_fingerprint(client: MlflowClient, run: Run) -> str | None:
    """The data fingerprint of the run; a trial from before trials recorded it has its
    study's."""
    found = run.data.params.get("data_fingerprint") or run.data.tags.get(
        "finetrack.data_fingerprint"
    )
    parent = run.data.tags.get("mlflow.parentRunId")
    if found is None and parent:
        found = client.get_run(parent).data.params.get("data_fingerprint")
    return found


@dataclass
class Checks:
    """What differs from when the run ran, found before training."""

    warnings: list[str]
    precision: str  # fp32 or bf16: which tolerance applies (tasks/reproduction_verdict.py)


def _code_text(tags: dict[str, str]) -> str:
    text = f"finetrack {tags.get(provenance.VERSION, 'unknown')}"
    if provenance.GIT_COMMIT in tags:
        text += f", commit {tags[provenance.GIT_COMMIT][:12]}"
        text += " with changes" if tags.get(provenance.GIT_DIRTY) == "True" else ""
    return f"{text}, sources {tags.get(provenance.SOURCE_HASH, 'unknown')[:12]}"


def _recipe_text(bf16: bool, frozen: int) -> str:
    return f"{'bf16' if bf16 else 'fp32'}, {frozen} frozen layer(s)"


def _machine_text(tags: dict[str, str]) -> str:
    names = (provenance.CPU, provenance.CPU_FLAGS, provenance.GPU)
    cpu, flags, gpu = (tags.get(name, "not recorded") for name in names)
    return f"{cpu} ({flags}; GPU {gpu})"


def check(
    client: MlflowClient,
    original: Original,
    data: LoadedData,
    config: FineTuneConfig,
    model_path: str,
    allow_data_change: bool = False,
) -> Checks:
    """Data, code, libraries and machine against the record. Other data are refused unless
    `allow_data_change`; the rest are warnings, each naming both sides."""
    params, tags = original.run.data.params, original.run.data.tags
    warnings = []
    recorded = recorded_fingerprint(client, original.run)
    if recorded != data.fingerprint:
        message = (
            f"the data differ from the run's: fingerprint {data.fingerprint[:12]} in "
            f"{data.source}, the run recorded {(recorded or 'none')[:12]}"
        )
        if not allow_data_change:
            raise RefusedError(f"{message}; --allow-data-change reproduces on them anyway")
        warnings.append(message)
    code = provenance.code_version()
    if any(tags.get(name) != code.get(name) for name in provenance.CODE_TAGS):
        warnings.append(
            f"the code differs: the run ran {_code_text(tags)}, this is {_code_text(code)}"
        )
    libraries = tracking.library_versions()
    changed = [
        f"{name.removesuffix('_version')} {params.get(name, 'not recorded')} -> "
        f"{libraries.get(name, 'not installed')}"
        for name in sorted(libraries.keys() | {k for k in params if k.endswith("_version")})
        if params.get(name) != libraries.get(name)
    ]
    if changed:
        warnings.append(f"library versions differ: {', '.join(changed)}")
    bf16 = use_bf16(config.bf16)
    # 'auto' counts the model's layers; a pinned count needs no weights loaded
    model = load_model(model_path, data.label_names) if config.freeze_layers == "auto" else None
    frozen = layers_to_freeze(config.freeze_layers, bf16, model)
    ran = params.get("bf16_active") == "True", int(params.get("frozen_layers", frozen))
    if "bf16_active" in params and ran != (bf16, frozen):
        warnings.append(
            f"this machine resolves the recipe to {_recipe_text(bf16, frozen)}, the run trained "
            f"{_recipe_text(*ran)}: it ran on {_machine_text(tags)}, this is "
            f"{_machine_text(provenance.machine())}"
        )
    return Checks(warnings, "bf16" if bf16 or ran[0] else "fp32")
