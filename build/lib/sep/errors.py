"""Errors a user can fix. The CLI prints the sentence and exits with code 2."""


class BadInput(ValueError):
    """Bad input: an unknown stock, a date outside the data, an unreadable or empty file."""


class TimeRuleError(RuntimeError):
    """Something dated after the decision day reached a prompt: a bug, never bad input. Raised, not asserted,
    so it holds under `python -O` too."""
