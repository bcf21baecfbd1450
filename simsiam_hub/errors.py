"""The base of every user-facing error: the CLI prints these as one line, no traceback."""


class SimsiamHubError(Exception):
    """Bad input, said clearly: what was expected and what was found."""
