"""One exception type for every user-facing failure.

Anything raised as `AttncnnError` is printed by the command line as a single line
(`attncnn: error: ...`) with exit status 2 and no traceback: the message must name the
problem (the file, the key, the model) and, where possible, what to do about it.
`closest` and `check_choice` word the "did you mean" of a mistyped name.
"""


class AttncnnError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class UnknownModelError(AttncnnError, KeyError):
    """A model name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def closest(word, known) -> str | None:
    """The known name a typo most likely meant, if any is close enough."""
    import difflib

    close = difflib.get_close_matches(str(word), [str(k) for k in known], n=1, cutoff=0.5)
    return close[0] if close else None


def check_choice(value, allowed, what: str) -> None:
    """Refuse `value` unless it is in `allowed`: "<what> must be one of ..., got ...; did
    you mean ...?" (`what` names the setting, e.g. "config.yaml: data.label_mode")."""
    if value not in allowed:
        close = closest(value, allowed)
        hint = f"; did you mean {close!r}?" if close else ""
        raise AttncnnError(f"{what} must be one of {', '.join(allowed)}, got {value!r}{hint}")
