"""One exception type for every user-facing failure.

Anything raised as `AttncnnError` is printed by the command line as a single line
(`attncnn: error: ...`) with exit status 2 and no traceback: the message must name the
problem (the file, the key, the model) and, where possible, what to do about it.
"""


class AttncnnError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class UnknownModelError(AttncnnError, KeyError):
    """A model name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])
