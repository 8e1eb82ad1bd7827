"""The one exception type a user sees, and the two helpers every message uses.

Anything the user can fix (a typo in a config key, a missing folder, a file
that is not an image) is raised as `ImgclsError` with a message that names the
file or key and says how to fix it. The CLI prints it as one line and exits
with code 2; every other exception is a bug in imgcls and keeps its traceback.
"""

from __future__ import annotations

import difflib
from typing import Iterable


class ImgclsError(Exception):
    """A problem in the user's input, explained in one line."""


class ConfigError(ImgclsError):
    """A config that does not load: a misspelt key, a wrong type, keys that do not go together."""


def first_line(exc: BaseException, limit: int = 200, prefer: Iterable[str] = ()) -> str:
    """One line of an exception's message for a one-line error: the first that mentions a `prefer`
    word (converters bury the telling line under pages of context), else the first; the type name
    when the message is empty."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    telling = [line for line in lines if any(word in line.lower() for word in prefer)]
    return ((telling or lines or [type(exc).__name__])[0])[:limit]


def did_you_mean(word: str, choices: Iterable[str], prefix: str = "") -> str:
    """'did you mean <prefix><closest>?' for a misspelt name, or '' when nothing is close."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f"did you mean {prefix}{close[0]}?" if close else ""
