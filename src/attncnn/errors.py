"""One exception type for every user-facing failure.

Anything raised as `AttncnnError` is printed by the command line as a single line
(`attncnn: error: ...`) with exit status 2 and no traceback: the message must name the
problem (the file, the key, the model) and, where possible, what to do about it.
`did_you_mean` (with `closest` and `check_choice`) words the "did you mean" of a mistyped
name, and `first_line` shortens another library's exception to its first line.
"""
import difflib


class AttncnnError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class UnknownModelError(AttncnnError, KeyError):
    """A model name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, or its type's name when it has none."""
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _close_matches(word, known, n: int) -> list[str]:
    return difflib.get_close_matches(str(word), [str(k) for k in known], n=n, cutoff=0.5)


def closest(word, known) -> str | None:
    """The known name a typo most likely meant, if any is close enough."""
    close = _close_matches(word, known, 1)
    return close[0] if close else None


def did_you_mean(word, known, n: int = 1) -> str:
    """The hint to append to an "unknown ..." message: "; did you mean 'depth'?" for the
    closest known name, or with n > 1 up to n of them, "; did you mean resnet20_cifar,
    resnet32_cifar?"; "" when no known name is close."""
    close = _close_matches(word, known, n)
    if not close:
        return ""
    return f"; did you mean {close[0]!r}?" if n == 1 else f"; did you mean {', '.join(close)}?"


def check_choice(value, allowed, what: str) -> None:
    """Refuse `value` unless it is in `allowed`: "<what> must be one of ..., got ...; did
    you mean ...?" (`what` names the setting, e.g. "config.yaml: data.label_mode")."""
    if value not in allowed:
        raise AttncnnError(f"{what} must be one of {', '.join(allowed)}, got {value!r}"
                           f"{did_you_mean(value, allowed)}")
