"""The one error type for bad user input."""


class FactoryError(Exception):
    """Bad input described in one human-readable line.

    The CLI prints the message on stderr and exits with code 2, without a traceback.
    Raise it for anything the user can fix (a config key, a value, a file); let
    programming errors surface as ordinary exceptions.
    """
