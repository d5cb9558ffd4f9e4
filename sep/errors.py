"""Errors a user can fix. The CLI prints the sentence and exits with code 2."""


class BadInput(ValueError):
    """Bad input: an unknown stock, a date outside the data, an unreadable or empty file."""
