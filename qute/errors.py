"""Errors a user can fix: the CLI prints them as one line and exits with 2."""


class QuteError(Exception):
    """Bad input: the message says what was wrong and what would be right."""


class RunFailure(Exception):
    """The tools ran but the result is wrong (a mismatch, a crash, a time-out, a failed flash):
    the CLI prints the message and exits with 1."""
