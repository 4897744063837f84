"""Errors for problems a user can fix (bad option, missing or corrupt file, refused
overwrite). The CLI prints their message as a single line and exits 1; anything else is
a bug and keeps its traceback.

Library code never names command-line flags: a bad value of a parameter raises
:class:`ParameterError` naming the *parameter* (``seed``, ``device``, ``mig.num_train``),
and the CLI turns the name into its flag (``--seed``, ``--param mig.num_train``) when it
prints the message (:func:`disentangle.cli.user_message`).
"""
from __future__ import annotations

_NO_VALUE = object()


def exception_reason(exc: BaseException) -> str:
    """One line saying why ``exc`` happened: a UserError's message, else its type and first line."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, UserError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class UserError(Exception):
    """A problem the user can fix; the message is one line naming the file or option."""


class ParameterError(UserError, ValueError):
    """A bad value of one named parameter (a ValueError too: it is one).

    ``str(error)`` is ``"[<context>: ]<parameter>[ <value>]: <message>"``; :meth:`message_for`
    gives the same line with the parameter shown under another name (the CLI's flag).
    ``context`` says where the value came from (a spec file and its block)."""

    def __init__(self, parameter: str, message: str, value=_NO_VALUE, context: str = "",
                 mentions: tuple[str, ...] = ()):
        self.parameter = str(parameter)
        self.message = str(message)
        self.value = value
        self.context = str(context)
        # other parameters the message names (shown under their own names too)
        self.mentions = tuple(mentions)
        super().__init__(self.message_for(self.parameter))

    def message_for(self, shown_name: str, show=None) -> str:
        """The line with the parameter shown as ``shown_name`` and, given ``show`` (a
        function of a parameter name), every parameter in ``mentions`` shown by it."""
        import re
        value = "" if self.value is _NO_VALUE else f" {self.value}"
        where = f"{self.context}: " if self.context else ""
        message = self.message
        if show is not None and self.mentions:
            pattern = r"(?<![\w-])(" + "|".join(map(re.escape, self.mentions)) + r")(?![\w-])"
            message = re.sub(pattern, lambda m: show(m.group(1)), message)
        return f"{where}{shown_name}{value}: {message}"

    def within(self, context: str) -> "ParameterError":
        """The same error, located in ``context`` (outermost first)."""
        return ParameterError(self.parameter, self.message, self.value,
                              f"{context}: {self.context}" if self.context else context, self.mentions)
