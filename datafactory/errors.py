"""The one error type for bad user input."""

from __future__ import annotations


class FactoryError(Exception):
    """Bad input described in one human-readable line.

    The CLI prints the message on stderr and exits with code 2, without a traceback.
    Raise it for anything the user can fix (a config key, a value, a file); let
    programming errors surface as ordinary exceptions.

    The library speaks of its own parameters, not of command-line flags: ``field`` names
    the parameter the message is about (``"style"``, ``"out"``, ``"split"``, ...), and a
    remedy names a parameter in backticks, as a keyword argument (```arch='unet'```,
    ```overwrite=True```, ```lr```). The command line prints the flag for ``field`` in
    front of the message and turns each backticked parameter into its flag
    (``factory_app.cli.common.user_message``): ``--style: 'x' is not a STYLE bundle``.
    """

    def __init__(self, message: str = "", field: str | None = None):
        super().__init__(message)
        self.field = field

    def __reduce__(self):  # keep the field across processes (pool workers raise these too)
        return type(self), (str(self), self.field)


def notice(message: str) -> None:
    """A note for the user on stderr, from any layer: something worth knowing that does not stop the job."""
    import sys

    print(f"note: {message}", file=sys.stderr, flush=True)
