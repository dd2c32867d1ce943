"""User-facing errors.

Anything raised as a `HintflowError` is bad input or a failed run that the user
can act on: `jobs.run` prints its message as one line, with no traceback, and
exits non-zero. Everything else is a bug and keeps its traceback.

These errors cross Ray actor boundaries (Ray re-raises them in the driver
wrapped in a `RayTaskError`), so they must stay picklable: one string argument.
"""


class HintflowError(Exception):
    """Base class; `kind` prefixes the one-line message."""

    kind = "error"

    def one_line(self) -> str:
        return f"{self.kind}: {' '.join(str(self).split())}"


class SpecError(HintflowError):
    kind = "spec error"


class DataError(HintflowError):
    kind = "data error"


class ModelError(HintflowError):
    kind = "model error"


class TrainingError(HintflowError):
    kind = "training error"


class RewardError(HintflowError):
    kind = "reward error"
