"""The small error tree every part of mudguard raises from.

``RemoteInputError`` marks data that came from outside (a device, a MUD server,
a form): the caller shows it and carries on. ``BugError`` marks code that should
be unreachable.
"""

from __future__ import annotations


class MudguardError(Exception):
    """Base of every mudguard error; ``key`` is a stable identifier for UIs."""

    key = "error"


class RemoteInputError(MudguardError):
    """Something from outside (device, server, owner input) was malformed or hostile."""

    key = "bad_input"


class BugError(MudguardError):
    """A state the code should never reach."""

    key = "bug"
