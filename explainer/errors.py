"""The one exception type that means "the user gave something we cannot use"."""


class InputError(ValueError):
    """Bad input from the user: a missing file, a non-classifier model, a bad option.

    The command line prints its message on one line and exits with status 2.
    """
