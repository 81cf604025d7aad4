"""Search space checks happen up front, and a study refuses a changed space."""

import pytest

from flows.cli import build_config, parser
from tasks.config import ConfigError, SearchConfig
from tasks.search import open_study


def parse(*flags: str) -> SearchConfig:
    return build_config(parser().parse_args(["search", *flags]), SearchConfig)


def test_defaults():
    config = SearchConfig()
    assert (config.learning_rate_range.low, config.learning_rate_range.high) == (1e-5, 1e-4)
    assert config.learning_rate_range.log
    assert (config.num_epochs_range.low, config.num_epochs_range.high) == (1, 5)
    assert config.sampler == "tpe" and config.train.objective_metric == "auto"


def test_flags_reach_both_parts():
    config = parse(
        "--n-trials", "5", "--learning-rate-range", "2e-5,3e-5,log", "--batch-size", "16"
    )
    assert config.n_trials == 5
    assert (config.learning_rate_range.low, config.learning_rate_range.log) == (2e-5, True)
    assert config.train.batch_size == 16
    assert not parse("--learning-rate-range", "2e-5,3e-5").learning_rate_range.log


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--learning-rate-range", "1e-4,1e-5"], "inverted"),
        (["--learning-rate-range", "1e-5,1e-5"], "empty"),
        (["--num-epochs-range", "3,1"], "inverted"),
        (["--num-epochs-range", "0,2"], "start at 1"),
        (["--batch-size-choices", "8,0"], "positive"),
        (["--n-trials", "0"], "n_trials"),
        (["--warmup-ratio-range", "0,1.5"], "below 1"),
    ],
)
def test_bad_space_is_refused(flags, message):
    with pytest.raises(ConfigError, match=message):
        parse(*flags)


def test_changed_space_needs_force(tmp_path):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    open_study(SearchConfig(storage=storage, study_name="s"))
    changed = SearchConfig(storage=storage, study_name="s", num_epochs_range="1,3")
    with pytest.raises(ConfigError, match="another search space"):
        open_study(changed)
    assert open_study(changed, force=True).study_name == "s"


def test_confirmed_test_score_of_zero_is_recorded():
    from flows.confirmation import confirmed_metrics

    winner = {"metric": "f1", "mean_validation": 0.5, "mean_test": 0.0}
    assert confirmed_metrics(winner) == {"confirmed_validation_f1": 0.5, "confirmed_test_f1": 0.0}
    no_test = {"metric": "accuracy", "mean_validation": 0.75, "mean_test": None}
    assert confirmed_metrics(no_test) == {"confirmed_validation_accuracy": 0.75}


@pytest.mark.parametrize(
    ("flags", "owner"),
    [
        (["--learning-rate", "3e-5"], "learning_rate_range"),
        (["--num-epochs", "2"], "num_epochs_range"),
        (["--batch-size-choices", "8,16", "--batch-size", "16"], "batch_size_choices"),
        (["--weight-decay-range", "0,0.1", "--weight-decay", "0.01"], "weight_decay_range"),
    ],
)
def test_search_refuses_settings_it_owns(flags, owner):
    with pytest.raises(ConfigError, match=f"set by the search \\(its {owner}\\)"):
        parse(*flags)
    assert parse("--batch-size", "16").train.batch_size == 16  # not searched: allowed


F1 = {"objective_metric": "f1"}  # as the flows resolve 'auto' on MRPC's integer labels


def test_study_keeps_its_objective(tmp_path):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    open_study(SearchConfig(storage=storage, study_name="o", train=F1))
    on_accuracy = SearchConfig(
        storage=storage, study_name="o", train={"objective_metric": "accuracy"}
    )
    with pytest.raises(ConfigError, match="optimises eval_f1, not eval_accuracy"):
        open_study(on_accuracy)
    assert open_study(on_accuracy, force=True).user_attrs["finetrack_objective"] == "eval_accuracy"


def test_retrain_by_search_refuses_settings_the_search_sets():
    from tasks.config import RetrainConfig, validated

    with pytest.raises(ConfigError, match="learning_rate would be set by the search"):
        validated(RetrainConfig, {"hyperparameters": "search", "train": {"learning_rate": 3e-5}})
    kept = validated(RetrainConfig, {"hyperparameters": "config", "train": {"learning_rate": 3e-5}})
    assert kept.train.learning_rate == 3e-5


def test_study_keeps_its_reports_per_epoch(tmp_path):
    import optuna

    storage = f"sqlite:///{tmp_path}/optuna.db"
    halves = open_study(SearchConfig(storage=storage, study_name="r", train=F1))
    assert halves.user_attrs["finetrack_reports_per_epoch"] == 2  # the default
    with pytest.raises(ConfigError, match="reports 2 time\\(s\\) per epoch, not 1"):
        open_study(SearchConfig(storage=storage, study_name="r", reports_per_epoch=1, train=F1))
    # a study from before sub-epoch reports: trials, no attribute; its steps were epochs
    older = optuna.create_study(study_name="old", storage=storage, direction="maximize")
    older.add_trial(optuna.trial.create_trial(value=0.8, intermediate_values={1: 0.8}))
    with pytest.raises(ConfigError, match="reports 1 time\\(s\\) per epoch, not 2"):
        open_study(SearchConfig(storage=storage, study_name="old", train=F1))
    kept = open_study(
        SearchConfig(storage=storage, study_name="old", reports_per_epoch=1, train=F1)
    )
    assert kept.user_attrs["finetrack_reports_per_epoch"] == 1


def confirmed_row(trial: int, scores: list[float], epochs: int, frozen: int = 0) -> dict:
    return {
        "trial": trial,
        "validation_scores": scores,
        "mean_validation": sum(scores) / len(scores),
        "num_epochs": epochs,
        "frozen_layers": frozen,
    }


def test_confirmation_picks_the_cheaper_of_configurations_it_cannot_tell_apart():
    from flows.confirmation import pick_winner

    # per-seed differences 0.01, -0.01, 0.005: mean +0.0017, t interval holds 0 (by hand:
    # sd 0.01041, half-width 4.303 * 0.01041 / sqrt(3) = 0.0259)
    expensive = confirmed_row(1, [0.82, 0.80, 0.815], epochs=5)
    cheap = confirmed_row(2, [0.81, 0.81, 0.81], epochs=2)
    winner = pick_winner([expensive, cheap])
    assert winner is cheap and "cheaper: 2 epoch(s)" in winner["reason"]
    assert cheap["vs_leader"]["low"] == pytest.approx(-0.001667 - 0.025860, abs=1e-5)
    assert "over 3 paired seeds" in cheap["vs_leader"]["text"]


def test_confirmation_keeps_a_leader_told_apart_and_breaks_ties_on_frozen_layers():
    from flows.confirmation import pick_winner

    leader = confirmed_row(1, [0.85, 0.86, 0.84], epochs=4)
    behind = confirmed_row(2, [0.80, 0.81, 0.79], epochs=2)  # 5 points behind on every seed
    assert pick_winner([leader, behind]) is leader
    assert behind["vs_leader"]["high"] == pytest.approx(-0.05)  # no spread: a zero-width interval
    same = confirmed_row(3, [0.85, 0.86, 0.84], epochs=4, frozen=2)
    assert pick_winner([leader, same]) is same  # tied, as many epochs, fewer trainable weights


def test_a_searchable_setting_declared_once_is_searched_owned_logged_and_trained_with(tmp_path):
    """max_grad_norm is searched by one declaration (SearchConfig.max_grad_norm_range): the
    trial draws it, the study logs it in its space, the search owns it, its bounds are the
    setting's, the warm start fits it, and it reaches the run's params and TrainingArguments."""
    import optuna
    from optuna.distributions import FloatDistribution

    from tasks import search_space
    from tasks.train import training_arguments

    config = parse("--max-grad-norm-range", "0.5,2")
    assert config.space()["max_grad_norm_range"] == {"low": 0.5, "high": 2.0, "log": False}
    assert "max_grad_norm_range" not in SearchConfig().space()  # unset: not searched
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    params = search_space.suggest(trial, config)
    assert list(params) == ["learning_rate", "num_epochs", "max_grad_norm"]
    assert trial.distributions["max_grad_norm"] == FloatDistribution(0.5, 2.0)
    trained = search_space.trial_config(config.train, params, tmp_path)
    assert trained.params()["max_grad_norm"] == str(params["max_grad_norm"])  # MLflow params
    assert training_arguments(trained, tmp_path).max_grad_norm == params["max_grad_norm"]
    assert training_arguments(SearchConfig().train, tmp_path).max_grad_norm == 1.0  # as before
    with pytest.raises(ConfigError, match="set by the search \\(its max_grad_norm_range\\)"):
        parse("--max-grad-norm-range", "0.5,2", "--max-grad-norm", "1")
    with pytest.raises(ConfigError, match="max_grad_norm_range must not be negative"):
        parse("--max-grad-norm-range=-1,2")
    known = {"learning_rate": "3e-05", "num_epochs": "2", "max_grad_norm": "1.5"}
    fitted = search_space.fit_to_space(config, known)
    assert fitted == {"learning_rate": 3e-5, "num_epochs": 2, "max_grad_norm": 1.5}
    assert search_space.fit_to_space(config, {**known, "max_grad_norm": "3"}) is None
