"""The base class of every error that is the user's to fix.

A `UserError` is an ordinary mistake (a wrong key, a missing file, a damaged radar
file, a store held by another writer): its message names the key or file as the user
wrote it, what is wrong and the fix. The `ni-*` commands print it as one line and exit
with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix; `str(err)` is the whole, one-line explanation."""
