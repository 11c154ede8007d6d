"""The one exception type users see.

A ``CaptioningError`` carries a message written for a person: what went wrong, where (file, line,
image), and what to do. The CLI prints it without a traceback and exits with status 1.
"""

# what to do about a run folder's file that is damaged or not what `fit` wrote
DAMAGED_RUN_FILE = "copy the run folder again from where it came from, or train it again"


class CaptioningError(Exception):
    """A problem with the user's input or environment, explained in the message."""


class DataFormatError(CaptioningError):
    """A captions file that cannot be parsed; the message names file and line."""

    def __init__(self, path, line, problem, hint=""):
        self.path, self.line, self.problem = str(path), line, problem
        where = f"{path}, line {line}" if line else str(path)
        super().__init__(f"{where}: {problem}" + (f"\n  {hint}" if hint else ""))


class UsageError(CaptioningError):
    """An option value outside its allowed range; the CLI exits 2, as for any usage error."""


class MissingBackend(CaptioningError, ImportError):
    """Keras cannot start: its backend (TensorFlow unless KERAS_BACKEND says otherwise) is missing."""
