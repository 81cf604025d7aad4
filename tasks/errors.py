"""The errors that mean the input is wrong: settings, data, model, tracking store, registry,
a run to reproduce.

The command line prints their message as one `error:` line and exits with 2, and flows never
retry them. They live apart from the modules that raise them so that naming them does not
import pandas or MLflow: `finetrack --help` answers at once.
"""

from tasks.config import ConfigError


class DataError(ValueError):
    """Raised for data that cannot be trained on, with a message naming file and problem."""


class ModelError(ValueError):
    """Raised when the configured model cannot be used, before any training."""


class NoModelError(LookupError):
    """Raised when the registry has no model (or no champion) to predict with."""


class TrackingError(RuntimeError):
    """Raised when the tracking server cannot be used, before any training starts."""


class RefusedError(ValueError):
    """Raised when a recorded run cannot be reproduced as asked (other data, a study run),
    before anything is trained."""


BAD_INPUT = (ConfigError, DataError, ModelError, NoModelError, TrackingError, RefusedError)
