"""The command line: --help, flags over YAML, and bad settings refused with exit code 2."""

import subprocess
import sys

import pytest

from flows.fine_tune import main


def test_help_lists_the_settings():
    result = subprocess.run(
        [sys.executable, "-m", "flows.fine_tune", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    for flag in ("--learning-rate", "--num-epochs", "--data-dir", "--config", "--bf16"):
        assert flag in result.stdout


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--learning-rate", "0"], "learning_rate"),
        (["--num-epochs", "0"], "num_epochs"),
        (["--batch-size", "-8"], "batch_size"),
    ],
)
def test_bad_flags_exit_2_before_any_work(flags, message, capsys):
    assert main(flags) == 2
    assert message in capsys.readouterr().err
