"""The training loop's error: the run cannot start or continue."""


class TrainingError(RuntimeError):
    """The run cannot start or continue; the message says why and what to do."""
