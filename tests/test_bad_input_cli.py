"""Bad input through the command lines: exit code 2, a message naming the problem, and nothing
trained, logged or registered. Each case runs the real `main` of a flow, so the check covers
the whole way from flags to the first task."""

import re
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

import tasks.machine_recipe
from flows import fine_tune, search, search_worker
from tasks.config import SearchConfig
from tasks.search import open_study
from tests.support.cluster import free_port
from tests.support.data import BAD_INPUTS, TINY_TSV, bad_data_dir, write_split_files

pytestmark = pytest.mark.usefixtures("prefect_backend")  # every test runs flows


def outputs(tmp_path: Path) -> list[str]:
    """Flags that keep every output under tmp_path and would register a model on success."""
    return [
        "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db",
        "--output-dir", str(tmp_path / "outputs"), "--cache-dir", str(tmp_path / "cache"),
        "--registered-model-name", "guard", "--max-train-samples", "8",
    ]  # fmt: skip


def assert_nothing_recorded(tmp_path: Path) -> None:
    """No MLflow run, no registered model, no checkpoint."""
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").iterdir())
    if not (tmp_path / "mlflow.db").exists():
        return
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiments = [e.experiment_id for e in client.search_experiments()]
    assert client.search_runs(experiments) == []
    assert client.search_registered_models() == []


def run_main(main, argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def refuse(main, argv, message, tmp_path, capsys):
    code, err = run_main(main, argv, capsys)
    assert code == 2
    assert message in err
    assert_nothing_recorded(tmp_path)


@pytest.mark.parametrize(("case", "change", "message"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_data(tmp_path, capsys, case, change, message):
    folder = bad_data_dir(tmp_path, change)
    argv = ["--data-dir", str(folder), *outputs(tmp_path)]
    code, err = run_main(fine_tune.main, argv, capsys)
    assert code == 2
    assert err.splitlines()[-1].startswith("error: ")
    assert re.search(message, err), err
    assert_nothing_recorded(tmp_path)


def refused_in_one_line(main, argv, tmp_path, capsys) -> str:
    """The one `error:` line of a refused command, once nothing was recorded."""
    code, err = run_main(main, argv, capsys)
    assert code == 2
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("error: ")]
    assert_nothing_recorded(tmp_path)
    return line


def test_labels_that_differ_only_in_case(tiny_dir, tmp_path, capsys):
    header = "sentence1\tsentence2\tlabel\n"
    rows = [f"a{i}\tb{i}\t{label}\n" for i, label in enumerate(["Yes", "yes", "No", "no"] * 2)]
    (tiny_dir / "train.tsv").write_text(header + "".join(rows))
    (tiny_dir / "validation.tsv").write_text(header + "c\td\tyes\n")
    argv = ["--data-dir", str(tiny_dir), *outputs(tmp_path)]
    line = refused_in_one_line(fine_tune.main, argv, tmp_path, capsys)
    assert "differ only in case" in line and "'No' and 'no', 'Yes' and 'yes'" in line


def test_max_length_beyond_the_models_positions(tiny_dir, tmp_path, capsys):
    """A 3,000-word sentence and --max-length 1000 with MiniLM's 512 positions."""
    header = "sentence1\tsentence2\tlabel\n"
    long = " ".join(["word"] * 3000)
    (tiny_dir / "train.tsv").write_text(header + f"{long}\tb\t0\nc\td\t1\n")
    argv = ["--data-dir", str(tiny_dir), *outputs(tmp_path), "--max-length", "1000"]
    line = refused_in_one_line(fine_tune.main, argv, tmp_path, capsys)
    assert "--max-length 1000: the model takes at most 512 tokens" in line


@pytest.mark.parametrize("main", [fine_tune.main, search.main], ids=["fine-tune", "search"])
def test_bf16_on_a_cpu_that_would_emulate_it(tiny_dir, tmp_path, capsys, monkeypatch, main):
    monkeypatch.setattr(tasks.machine_recipe, "cpu_has_native_bf16", lambda: False)
    argv = ["--data-dir", str(tiny_dir), "--bf16", "on", *outputs(tmp_path)]
    line = refused_in_one_line(main, argv, tmp_path, capsys)
    assert "--bf16 on: this CPU lacks native bf16" in line and "emulated" in line


def test_non_utf8_text(tmp_path, capsys):
    folder = write_split_files(tmp_path / "latin1", TINY_TSV)
    (folder / "train.tsv").write_bytes(b"sentence1\tsentence2\tlabel\ncaf\xe9\tb\t1\nc\td\t0\n")
    argv = ["--data-dir", str(folder), *outputs(tmp_path)]
    refuse(fine_tune.main, argv, "not UTF-8 text (line 2", tmp_path, capsys)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--learning-rate", "0"], "learning_rate"),
        (["--learning-rate=-1e-5"], "learning_rate"),
        (["--num-epochs", "0"], "num_epochs"),
        (["--model-name-or-path", "./no/such/model"], "model folder not found"),
        (["--freeze-layers", "7"], "the model has 6 encoder layers"),
        (["--freeze-layers", "some"], "freeze_layers"),
    ],
)
def test_bad_settings(tiny_dir, tmp_path, capsys, flags, message):
    argv = ["--data-dir", str(tiny_dir), *outputs(tmp_path), *flags]
    refuse(fine_tune.main, argv, message, tmp_path, capsys)


def test_model_folder_without_safetensors(tiny_dir, tmp_path, capsys):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "pytorch_model.bin").write_bytes(b"pickled weights are never loaded")
    argv = ["--data-dir", str(tiny_dir), *outputs(tmp_path), "--model-name-or-path", str(model)]
    refuse(fine_tune.main, argv, "no safetensors", tmp_path, capsys)


def test_unreachable_tracking_server(tiny_dir, tmp_path, capsys):
    argv = [
        "--data-dir", str(tiny_dir), *outputs(tmp_path),
        "--tracking-uri", f"http://user:secret@127.0.0.1:{free_port()}",  # nobody listens
    ]  # fmt: skip
    code, err = run_main(fine_tune.main, argv, capsys)
    assert code == 2
    assert "unreachable" in err
    assert "secret" not in err  # the password is redacted from the message


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--learning-rate-range", "1e-4,1e-5"], "inverted"),
        (["--learning-rate-range", "1e-5,1e-5"], "empty"),
        (["--num-epochs-range", "3,1"], "inverted"),
        (["--freeze-layers", "7"], "the model has 6 encoder layers"),
    ],
)
def test_bad_search_space(tiny_dir, tmp_path, capsys, flags, message):
    argv = ["--data-dir", str(tiny_dir), *outputs(tmp_path), *flags]
    refuse(search.main, argv, message, tmp_path, capsys)


def test_study_with_another_space(tiny_dir, tmp_path, capsys):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    open_study(SearchConfig(storage=storage, study_name="kept"))
    argv = [
        "--data-dir", str(tiny_dir), *outputs(tmp_path),
        "--storage", storage, "--study-name", "kept", "--num-epochs-range", "1,2",
    ]  # fmt: skip
    refuse(search.main, argv, "another search space", tmp_path, capsys)


def test_parallel_search_without_its_worker_deployment(tiny_dir, tmp_path, capsys):
    argv = ["--data-dir", str(tiny_dir), *outputs(tmp_path), "--parallelism", "2"]
    refuse(search.main, argv, "run `finetrack deploy`", tmp_path, capsys)


def test_search_worker_without_an_open_study(tiny_dir, tmp_path, capsys):
    argv = ["--data-dir", str(tiny_dir), *outputs(tmp_path), "--storage",
            f"sqlite:///{tmp_path}/optuna.db"]  # fmt: skip
    refuse(search_worker.main, argv, "start it with the search flow", tmp_path, capsys)
