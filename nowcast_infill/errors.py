"""The base class of every error that is the user's to fix.

A `UserError` is an ordinary mistake (a wrong key, a missing file, a damaged radar
file, a store held by another writer): its message names the key or file as the user
wrote it, what is wrong and the fix. The `ni-*` commands print it as one line and exit
with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix; `str(err)` is the whole, one-line explanation."""


class BadValueError(UserError, ValueError):
    """A value the user gave (a config key, an argument) is of the wrong type or out of range."""


class MissingInputError(UserError, FileNotFoundError):
    """An input file or store the user named does not exist."""


class OutputPathError(UserError, ValueError):
    """The output the user named cannot be written: the input itself, a folder that is not a
    store (or not the expected kind of store), or a place without write permission."""


class OutputExistsError(UserError, FileExistsError):
    """The output exists and the command was not asked to overwrite it."""


class ConfigSchemaError(UserError, ValueError):
    """The composed config breaks a schema (unknown key, wrong type, value out of range); the
    message starts with the offending key."""
