"""Errors the command line reports without a traceback."""


class UsageError(Exception):
    """Bad input from the user; the message names the offending field or flag."""
