"""One family of exceptions whose messages are meant for users.

The UI shows them as a toast; the command line prints the message as one line and exits 2.
Anything else that escapes is a bug and keeps its traceback.
"""


class CLLMError(Exception):
    """A refused input or operation; ``str(err)`` is a one-line message for a person."""


class ValidationError(CLLMError):
    """An input broke a rule (name, setting, argument)."""


class NotFoundError(CLLMError):
    """A named model, queue item or file does not exist."""


class AlreadyExistsError(CLLMError):
    """A name is already taken."""


class BusyError(CLLMError):
    """A model is locked by a running trainer (this process or another)."""


class ModelFileError(CLLMError):
    """A model file is missing, truncated, corrupted or of an unknown format."""


class DiskFullError(CLLMError):
    """The disk (or the user's quota) filled up during a write; the old files are intact."""
