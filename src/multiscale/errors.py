"""User-facing errors.

Every problem caused by input (files, keys, atom names, missing executables) is raised as a
:class:`MultiscaleError` with a one-line message that names the file/key/atom and says what to
do.  The CLI prints it as ``error: <message>`` and exits with status 2.
"""


class MultiscaleError(Exception):
    """An error the user can fix; the message is one actionable line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split("\n")))


def clip(value, n: int = 60) -> str:
    """``value`` as a whitespace-collapsed string of at most ``n`` characters, for echoing user
    input inside a one-line error message; quoted when it is empty, has spaces or odd characters."""
    text = " ".join(str(value).split())
    text = text if len(text) <= n else text[: n - 3] + "..."
    return text if text and text.isprintable() and " " not in text else repr(text)


def read_user_text(path, what: str = "file") -> str:
    """Text of a user file: UTF-8 (a BOM is dropped) or UTF-16/32 with a BOM; anything else is a
    one-line :class:`MultiscaleError` naming the file and the first bad byte."""
    import codecs
    from pathlib import Path

    data = Path(path).read_bytes()
    boms = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
            (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
    enc = next((e for bom, e in boms if data.startswith(bom)), "utf-8")
    try:
        return data.decode(enc)
    except UnicodeDecodeError as e:
        raise MultiscaleError(f"{path}: {what} is not {enc.upper()} text (bad byte at offset {e.start}): "
                              "save it as UTF-8") from None
