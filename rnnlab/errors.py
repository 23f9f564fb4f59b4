"""User-facing errors: each carries one readable line that names the key or the file at fault."""


class RnnlabError(Exception):
    """Base class of errors caused by the user's input rather than by a bug."""


class ConfigError(RnnlabError, ValueError):
    """A bad value in the composed config."""


class DataError(RnnlabError, ValueError):
    """A data file or data package that cannot be used."""


class StorageError(RnnlabError, OSError):
    """A run's file could not be written (a full disk, a quota, a read-only file system). ``str()`` is the one
    line; ``errno`` is the operating system's."""

    def __init__(self, errno: int | None, message: str) -> None:
        super().__init__(errno, message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[type, tuple[int | None, str]]:  # picklable for joblib workers
        return (type(self), (self.errno, self.message))


class DivergenceError(RnnlabError, ArithmeticError):
    """A NaN or Inf in the training loss or the gradients (``rnnlab.callbacks.DivergenceGuard``).

    The message is one line: what went non-finite, its value, the step, and the last good checkpoint. The fields
    are kept as attributes (``what``, ``value``, ``step``, ``epoch``, ``batch``, ``checkpoint``) for summary.json;
    the exception pickles (a joblib worker hands it back to the sweep).
    """

    def __init__(
        self,
        message: str,
        *,
        what: str = "",
        value: float = float("nan"),
        step: int = -1,
        epoch: int = -1,
        batch: int = -1,
        checkpoint: str | None = None,
    ):
        super().__init__(message)
        self.what, self.value, self.step, self.epoch, self.batch = what, value, step, epoch, batch
        self.checkpoint = checkpoint

    def details(self) -> dict[str, object]:
        """The fields as a JSON-ready dict (the value as its string: nan, inf, -inf)."""
        return {
            "what": self.what,
            "value": str(self.value),
            "step": self.step,
            "epoch": self.epoch,
            "batch": self.batch,
            "last_good_checkpoint": self.checkpoint,
        }
