"""`finetrack reproduce`: a run's record (code, machine, data), the checks before training,
and the verdict, each checked against what the test reads itself (git, lscpu, the CSVs)."""

import io
import json
import logging
import shutil
import subprocess
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient
from oracles import artifact, native_bf16

import tasks.machine_recipe
import tasks.train
from flows.cli import main
from flows.fine_tune import fine_tune
from flows.search import search_flow
from tasks import provenance, reproduction_verdict
from tasks import reproduce as reproduction
from tasks.config import ConfigError, FineTuneConfig, IntRange, SearchConfig
from tasks.data import load_data
from tasks.errors import RefusedError
from tasks.model import resolve_model
from tasks.study_record import TRIAL_TAG
from tasks.tracking import connect, library_versions
from tests.support.data import ROOT, small_train_config

ROWS = {"train": 32, "held_out": 20}


@dataclass
class Recorded:
    config: FineTuneConfig
    run_id: str
    folder: Path

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(self.config.tracking_uri)

    def reproduce(self, *flags: str, run_id: str | None = None) -> int:
        """`finetrack reproduce` of `run_id` (default: this run) in this process, so that a
        test hook applies; its exit status."""
        uri = ["--tracking-uri", self.config.tracking_uri]
        return main(["reproduce", run_id or self.run_id, *uri, *flags])

    def runs(self) -> list:
        experiment = self.client.get_experiment_by_name(self.config.experiment_name)
        return self.client.search_runs([experiment.experiment_id])

    def reproduction_of(self, run_id: str):
        """The latest reproduction of `run_id`."""
        runs = [r for r in self.runs() if r.data.tags.get(reproduction.REPRODUCES_TAG) == run_id]
        return max(runs, key=lambda run: run.info.start_time)


@pytest.fixture(scope="module")
def recorded(mrpc_dir, tmp_path_factory, prefect_backend) -> Recorded:
    """A tiny fp32 fine-tune (with 2 frozen layers): 32 training rows, one epoch, 20 rows of
    validation and test."""
    folder = tmp_path_factory.mktemp("reproduce")
    config = small_train_config(
        mrpc_dir, folder, max_train_samples=ROWS["train"], max_eval_samples=ROWS["held_out"],
        num_epochs=1, log_model=False, experiment_name="reproduce",
    )  # fmt: skip
    return Recorded(config, fine_tune(config).run_id, folder)


@pytest.fixture
def printed():
    """What the reproduce flow logs (the command prints it), however earlier commands in this
    process set up the project's loggers."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("flows.reproduce")
    logger.addHandler(handler)
    yield stream
    logger.removeHandler(handler)


def copy_head(data_dir: Path, folder: Path, rows: int = 40) -> Path:
    """The first `rows` rows of each split in a new folder (the data moved): the same data for
    a run on 32 training and 20 held-out rows."""
    folder.mkdir(parents=True)
    for split in ("train", "validation", "test"):
        lines = (data_dir / f"{split}.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
        (folder / f"{split}.tsv").write_text("".join(lines[: rows + 1]), encoding="utf-8")
    return folder


def predictions(recorded: Recorded, run_id: str, split: str) -> pd.DataFrame:
    path = artifact(recorded.client, run_id, f"predictions_{split}.csv", recorded.folder / run_id)
    return pd.read_csv(path, keep_default_na=False)


def report(recorded: Recorded, run_id: str) -> dict:
    path = artifact(recorded.client, run_id, reproduction_verdict.REPORT, recorded.folder / run_id)
    return json.loads(path.read_text())


def epoch_values(client: MlflowClient, run_id: str, name: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, name))


def snapshot(client: MlflowClient, run_id: str) -> tuple:
    run = client.get_run(run_id)
    artifacts = sorted(a.path for a in client.list_artifacts(run_id))
    return run.data.params, run.data.tags, run.data.metrics, artifacts


@pytest.mark.slow
def test_a_rerun_on_the_same_machine_is_identical(recorded, printed):
    client = recorded.client
    before = snapshot(client, recorded.run_id)
    assert recorded.reproduce() == 0
    new = recorded.reproduction_of(recorded.run_id)
    assert new.info.experiment_id == client.get_run(recorded.run_id).info.experiment_id
    for split in ("validation", "test"):  # row by row, as the test reads the two files
        original, again = (
            predictions(recorded, r, split) for r in (recorded.run_id, new.info.run_id)
        )
        assert len(original) == ROWS["held_out"]
        pd.testing.assert_frame_equal(original, again, check_exact=True)
    for name in ("train_loss", "eval_loss", "eval_f1"):
        assert epoch_values(client, new.info.run_id, name) == epoch_values(
            client, recorded.run_id, name
        )
    held_out = {k: v for k, v in client.get_run(recorded.run_id).data.metrics.items()
                if k.startswith(("validation_", "test_"))}  # fmt: skip
    assert held_out and all(new.data.metrics[k] == v for k, v in held_out.items())

    assert new.data.tags[reproduction_verdict.VERDICT_TAG] == "identical"
    assert new.data.tags[reproduction_verdict.LABELS_CHANGED_TAG] == "0"
    assert new.data.tags[reproduction_verdict.TOLERANCE_TAG] == "0.0001"  # had it differed: fp32's
    assert recorded.run_id in new.data.tags["mlflow.note.content"]  # linked in its description
    verdict = report(recorded, new.info.run_id)
    assert verdict["outcome"] == "identical" and verdict["warnings"] == []
    assert verdict["compared"]["prediction rows"] == 2 * ROWS["held_out"]
    assert verdict["changed_settings"]["threads"] == [None, torch.get_num_threads()]
    # the recipe its 'auto' settings resolved to, pinned: a later default cannot change it
    params = client.get_run(recorded.run_id).data.params
    bf16 = "on" if params["bf16_active"] == "True" else "off"
    assert verdict["changed_settings"]["bf16"] == ["auto", bf16]
    assert verdict["changed_settings"]["freeze_layers"] == ["auto", int(params["frozen_layers"])]
    assert "identical" in printed.getvalue()
    assert snapshot(client, recorded.run_id) == before  # the original is only read


@pytest.mark.slow
def test_a_bf16_rerun_on_the_same_machine_is_identical_too(recorded, tmp_path):
    """Where the CPU computes bf16; where it would emulate it, bf16 is refused before any run."""
    config = recorded.config.with_settings(bf16="on", output_dir=tmp_path / "outputs")
    if not native_bf16():
        runs = len(recorded.runs())
        with pytest.raises(ConfigError, match="would be emulated"):
            fine_tune(config)
        assert len(recorded.runs()) == runs
        return
    run_id = fine_tune(config).run_id
    assert recorded.reproduce(run_id=run_id) == 0
    new = recorded.reproduction_of(run_id)
    for split in ("validation", "test"):
        original, again = (predictions(recorded, r, split) for r in (run_id, new.info.run_id))
        pd.testing.assert_frame_equal(original, again, check_exact=True)
    assert new.data.params["bf16_active"] == "True"
    assert new.data.tags[reproduction_verdict.VERDICT_TAG] == "identical"
    assert new.data.tags[reproduction_verdict.TOLERANCE_TAG] == "0.03"  # had it differed: bf16's


@pytest.mark.slow
def test_changed_data_are_refused_before_any_run(recorded, tmp_path, capsys):
    moved = copy_head(recorded.config.data_dir, tmp_path / "moved")
    lines = (moved / "train.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    idx, label, rest = lines[1].split("\t", 2)
    lines[1] = "\t".join([idx, str(1 - int(label)), rest])  # one training label flipped
    (moved / "train.tsv").write_text("".join(lines), encoding="utf-8")
    runs = len(recorded.runs())

    assert recorded.reproduce("--data-dir", str(moved)) == 2
    error = capsys.readouterr().err
    recorded_fingerprint = recorded.client.get_run(recorded.run_id).data.params["data_fingerprint"]
    assert "the data differ" in error and recorded_fingerprint[:12] in error
    assert "--allow-data-change" in error
    assert len(recorded.runs()) == runs  # no new run


@pytest.mark.slow
def test_a_changed_training_differs_and_says_where(recorded, tmp_path, monkeypatch, printed):
    """A test hook seeds the weights' initialisation one off: the same flags train another
    model. The data moved meanwhile (--data-dir), which alone changes nothing."""
    seeded = tasks.train.set_seed
    monkeypatch.setattr(tasks.train, "set_seed", lambda seed: seeded(seed + 1))
    moved = copy_head(recorded.config.data_dir, tmp_path / "moved")
    assert recorded.reproduce("--data-dir", str(moved)) == 1

    new = recorded.reproduction_of(recorded.run_id)
    verdict = report(recorded, new.info.run_id)
    assert verdict["outcome"] == "differs" and verdict["warnings"] == []
    assert verdict["changed_settings"]["data_dir"] == [str(recorded.config.data_dir), str(moved)]
    client = recorded.client
    (original_loss,) = epoch_values(client, recorded.run_id, "eval_loss")
    (new_loss,) = epoch_values(client, new.info.run_id, "eval_loss")
    loss = {d["what"]: d for d in verdict["differences"]}["eval_loss, epoch 1"]
    assert (loss["original"], loss["reproduction"]) == (original_loss[1], new_loss[1])
    changed = {}
    for split in ("validation", "test"):
        original, again = (
            predictions(recorded, r, split) for r in (recorded.run_id, new.info.run_id)
        )
        changed[split] = int((original["predicted"] != again["predicted"]).sum())
    assert {p["split"]: p["labels_changed"] for p in verdict["predictions"]} == changed
    assert sum(changed.values()) > 0
    assert new.data.tags[reproduction_verdict.LABELS_CHANGED_TAG] == str(sum(changed.values()))
    text = printed.getvalue()
    assert "differs" in text and "eval_loss, epoch 1" in text
    for split, count in changed.items():
        assert f"predictions_{split}.csv: {count} of {ROWS['held_out']} rows' labels" in text


def git(*words: str) -> str:
    return subprocess.run(["git", *words], cwd=ROOT, capture_output=True, text=True).stdout


@pytest.mark.slow
def test_the_record_names_the_code_and_the_machine(recorded, tmp_path):
    run = recorded.client.get_run(recorded.run_id)
    tags = run.data.tags
    assert tags[provenance.GIT_COMMIT] == git("rev-parse", "HEAD").strip()
    changes = git("diff", "HEAD", "--name-only") + git("ls-files", "--others", "--exclude-standard")
    assert tags[provenance.GIT_DIRTY] == str(bool(changes.strip()))
    assert tags[provenance.VERSION] == "0.1.0"  # pyproject.toml
    # the hash is of the sources: a copy of them hashes the same, a changed byte does not
    copy = tmp_path / "copy"
    for package in provenance.SOURCES:
        shutil.copytree(
            ROOT / package, copy / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    assert provenance.source_hash(copy) == tags[provenance.SOURCE_HASH]
    with (copy / "tasks" / "reproduce.py").open("a") as source:
        source.write("\n")
    assert provenance.source_hash(copy) != tags[provenance.SOURCE_HASH]

    lines = subprocess.check_output(["lscpu"], text=True).splitlines()
    lscpu = {
        key.strip(): value.strip() for key, _, value in (line.partition(":") for line in lines)
    }
    assert tags[provenance.CPU] == lscpu["Model name"]
    flags = {"avx2", "avx512_bf16", "amx_bf16", "amx_tile"} & set(lscpu["Flags"].split())
    assert set(tags[provenance.CPU_FLAGS].split(",")) - {"none"} == flags
    assert tags[provenance.NATIVE_BF16] == str(native_bf16())
    assert (tags[provenance.GPU] == "none") is not torch.cuda.is_available()
    assert tags[provenance.THREADS] == str(torch.get_num_threads())
    assert run.data.params["data_source"] == str(recorded.config.data_dir.resolve())


@pytest.mark.slow
def test_a_trial_and_a_confirmation_are_reproduced_and_their_study_refused(
    recorded, mrpc_dir, tmp_path, capsys
):
    """A one-trial study, its configuration confirmed on one seed. The pruner probes the trial
    half-way through its epoch; a trial records per-epoch metrics only, and those are what its
    reproduction compares."""
    train = small_train_config(
        mrpc_dir, tmp_path, max_train_samples=ROWS["train"], max_eval_samples=ROWS["held_out"],
        batch_size=16, bf16="off", experiment_name="reproduce",
        tracking_uri=recorded.config.tracking_uri,
    )  # fmt: skip
    storage = f"sqlite:///{tmp_path}/optuna.db"
    space = {"num_epochs_range": IntRange(low=1, high=1), "confirm_top_k": 1, "confirm_seeds": 1}
    study = search_flow(
        SearchConfig(train=train, storage=storage, study_name="tiny", n_trials=1, **space)
    )
    client = recorded.client
    study_run = client.get_run(study["parent_run_id"])
    assert study_run.data.tags[provenance.GIT_COMMIT] == git("rev-parse", "HEAD").strip()
    assert study_run.data.params["torch_version"] == version("torch")
    assert study_run.data.params["data_source"] == str(mrpc_dir.resolve())
    children = [
        r for r in recorded.runs() if r.data.tags.get("mlflow.parentRunId") == study_run.info.run_id
    ]
    (trial,) = [r for r in children if TRIAL_TAG in r.data.tags]
    (confirmation,) = [r for r in children if "finetrack.confirm_of_trial" in r.data.tags]
    assert trial.data.params["data_fingerprint"] == study_run.data.params["data_fingerprint"]
    assert trial.data.tags[provenance.GIT_COMMIT] == study_run.data.tags[provenance.GIT_COMMIT]
    (optuna_trial,) = optuna.load_study(study_name="tiny", storage=storage).trials
    assert sorted(optuna_trial.intermediate_values) == [1, 2]  # half-way, and the epoch's end

    assert recorded.reproduce(run_id=study_run.info.run_id) == 2
    error = capsys.readouterr().err
    assert "is a study" in error
    assert trial.info.run_id in error and confirmation.info.run_id in error

    assert recorded.reproduce(run_id=trial.info.run_id) == 0
    new = recorded.reproduction_of(trial.info.run_id)
    for name in ("train_loss", "eval_loss", "eval_f1"):
        values = epoch_values(client, trial.info.run_id, name)
        assert values and epoch_values(client, new.info.run_id, name) == values
    verdict = report(recorded, new.info.run_id)
    assert verdict["outcome"] == "identical" and verdict["kind"] == "trial"
    assert verdict["compared"] == {
        "per-epoch values": 5,
        "held-out metrics": 0,
        "prediction rows": 0,
    }

    assert recorded.reproduce(run_id=confirmation.info.run_id) == 0
    new = recorded.reproduction_of(confirmation.info.run_id)
    original, again = (
        predictions(recorded, r, "validation") for r in (confirmation.info.run_id, new.info.run_id)
    )
    pd.testing.assert_frame_equal(original, again, check_exact=True)
    verdict = report(recorded, new.info.run_id)
    assert verdict["outcome"] == "identical" and verdict["kind"] == "confirmation"
    assert verdict["changed_settings"]["log_model"] == [True, False]  # nothing registered


def test_runs_without_a_training_to_repeat_are_refused(tmp_path):
    client = connect(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.create_experiment("refusals")
    with pytest.raises(RefusedError, match="no run 0123 in the tracking store"):
        reproduction.read_original(client, "0123")
    other = client.create_run(experiment, tags={"finetrack.flow": "predict"})
    with pytest.raises(RefusedError, match="not a fine-tune, trial or confirmation run"):
        reproduction.read_original(client, other.info.run_id)
    failed = client.create_run(experiment, tags={"finetrack.flow": "fine-tune"})
    with pytest.raises(RefusedError, match="nothing to compare"):
        reproduction.read_original(client, failed.info.run_id)


def test_settings_come_back_from_params():
    config = FineTuneConfig(
        label_names=["no", "yes"], threads=2, freeze_layers=3, learning_rate=3e-5,
        text_pair_column="none", run_name="r", cache_frozen_features=False,
    )  # fmt: skip
    rebuilt = FineTuneConfig(**reproduction._settings_from_params(config.params()))
    assert rebuilt == config


def test_predictions_hold_within_the_tolerance_only():
    original = pd.DataFrame({"predicted": ["0", "1"], "prob_0": [0.6, 0.3], "prob_1": [0.4, 0.7]})
    nudged = original.assign(prob_0=[0.59, 0.31], prob_1=[0.41, 0.69])
    compared = reproduction_verdict.compare_predictions("validation", original, nudged)
    assert compared.labels_changed == 0
    assert compared.largest_probability_difference == pytest.approx(0.01)
    assert compared.holds(0.03) and not compared.holds(1e-4)
    flipped = reproduction_verdict.compare_predictions(
        "validation", original, nudged.assign(predicted=["1", "1"])
    )
    assert flipped.labels_changed == 1 and not flipped.holds(0.03)
    fewer = reproduction_verdict.compare_predictions("validation", original, nudged.head(1))
    assert fewer.largest_probability_difference is None and not fewer.holds(1.0)


@pytest.mark.parametrize("native", [True, False], ids=["native-bf16", "emulated-bf16"])
def test_the_recipe_auto_resolved_to_is_pinned(monkeypatch, native):
    monkeypatch.setattr(reproduction, "native_bf16", lambda: native)
    autos = {"bf16": "auto", "freeze_layers": "auto"}
    fp32_run = {"bf16_active": "False", "frozen_layers": "2"}
    assert reproduction.pinned_recipe(autos, fp32_run) == {"bf16": "off", "freeze_layers": 2}
    bf16_run = {"bf16_active": "True", "frozen_layers": "0"}
    # a bf16 run where bf16 would be emulated: left to 'auto' (fp32), and `check` warns
    expected = {"bf16": "on", "freeze_layers": 0} if native else {"freeze_layers": 0}
    assert reproduction.pinned_recipe(autos, bf16_run) == expected
    chosen = {"bf16": "off", "freeze_layers": 3}  # settings the user chose stay as they were
    assert reproduction.pinned_recipe(chosen, bf16_run) == {}
    assert reproduction.pinned_recipe(autos, {}) == {}  # a record from before these params


def test_checks_name_what_differs(tiny_dir, tmp_path):
    """A record from another machine kind, code and torch: each a warning naming both sides;
    other data: refused."""
    client = connect(f"sqlite:///{tmp_path}/mlflow.db")
    config = FineTuneConfig(data_dir=tiny_dir)
    data = load_data(config)
    elsewhere = not tasks.machine_recipe.use_bf16("auto")  # the other recipe from this machine's
    experiment = client.create_experiment("checks")
    other_cpu = {provenance.CPU: "Some CPU", provenance.CPU_FLAGS: "avx2", provenance.GPU: "none"}
    run = client.create_run(experiment, tags={provenance.GIT_COMMIT: "0" * 40, **other_cpu})
    params = {
        **library_versions(),
        "torch_version": "0.0.1",
        "data_fingerprint": data.fingerprint,
        "bf16_active": str(elsewhere),
        "frozen_layers": "0" if elsewhere else "2",
    }
    for key, value in params.items():
        client.log_param(run.info.run_id, key, value)
    original = reproduction.Original(client.get_run(run.info.run_id), "fine-tune", "checks")
    model_path = resolve_model(config.model_name_or_path)
    checks = reproduction.check(client, original, data, config, model_path)
    code, libraries, machine = checks.warnings
    assert (
        "commit 000000000000" in code
        and provenance.code_version()[provenance.SOURCE_HASH][:12] in code
    )
    assert libraries == f"library versions differ: torch 0.0.1 -> {version('torch')}"
    assert (
        "Some CPU (avx2; GPU none)" in machine and provenance.machine()[provenance.CPU] in machine
    )
    assert checks.precision == "bf16"

    other = FineTuneConfig(data_dir=tiny_dir, max_train_samples=2)
    with pytest.raises(RefusedError, match="the data differ"):
        reproduction.check(client, original, load_data(other), other, model_path)
