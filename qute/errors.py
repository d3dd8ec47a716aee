"""Errors a user can fix: the CLI prints them as one line and exits with 2."""


class QuteError(Exception):
    """Bad input: the message says what was wrong and what would be right."""
