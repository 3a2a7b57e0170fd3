"""User-facing errors.

Every problem caused by input (files, keys, atom names, missing executables) is raised as a
:class:`MultiscaleError` with a one-line message that names the file/key/atom and says what to
do.  The CLI prints it as ``error: <message>`` and exits with status 2.
"""


class MultiscaleError(Exception):
    """An error the user can fix; the message is one actionable line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split("\n")))
