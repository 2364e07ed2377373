"""Tar bundles as inputs: `.tar`, `.tar.gz`, `.tar.bz2` (and bundles inside bundles) read as a stream.

DWD ships RADOLAN archives as monthly `.tar` files of daily `.tar.gz` bundles of one file
per time step. `work_items(files)` turns a list of inputs into the unit a reader
decodes: a plain file stays a path; every regular member of a bundle becomes its bytes,
read in order from a `tarfile` stream (mode `r|*`: no seeking, nothing extracted to
disk, one member in memory at a time, however large the bundle).

Names: a member is named `bundle!member` (a bundle inside a bundle:
`month.tar!20170816.tar.gz!raa01-yw...`), as the user wrote the bundle's path, in
messages and in the store's `source_files`; its provenance (the `sha256` field of
`source_files`) is `<sha256 of the outermost bundle>:<member path inside it>`, which
identifies the bytes as well as a member's own hash would and costs one sequential
read of the bundle instead of one hash per member.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from nowcast_infill.io.files import file_sha256
from nowcast_infill.io.importers import ConversionError

# Names of bundles, by how they end (case-insensitive): tarfile's `r|*` detects the compression.
BUNDLE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tbz", ".tar.xz", ".txz")
# Separates a bundle's name from a member's in every name this module gives.
MEMBER_SEPARATOR = "!"


def is_bundle(name: str | Path) -> bool:
    """True when `name` ends like a tar bundle (`.tar`, `.tar.gz`, `.tgz`, `.tar.bz2`, ...)."""
    return str(name).lower().endswith(BUNDLE_SUFFIXES)


@dataclass(frozen=True)
class WorkItem:
    """One unit a reader turns into frames.

    path: the name in messages and in `source_files`: the file as given, or `bundle!member`.
    content: the member's bytes as stored in the bundle (None: read `path` from disk).
    provenance: `<bundle sha256>:<member path>` for a member; None for a plain file (hashed when read).
    """

    path: Path
    content: bytes | None = None
    provenance: str | None = None


def work_items(files: list[Path]) -> Iterator[WorkItem]:
    """The items of `files` in order: each plain file, then each member of each bundle as it streams in."""
    for path in files:
        if is_bundle(path):
            yield from bundle_members(path)
        else:
            yield WorkItem(path)


def bundle_members(bundle: Path) -> Iterator[WorkItem]:
    """Each regular-file member of the tar bundle `bundle` (nested bundles opened in turn), streamed.

    Raises ConversionError naming `bundle` (or `bundle!member` for the member being read)
    when the archive is damaged or cut short.
    """
    digest = file_sha256(bundle)
    try:
        fh = open(bundle, "rb")
    except OSError as err:
        raise ConversionError(
            bundle, f"cannot read the bundle ({type(err).__name__}: {err}); check the path and its permissions."
        ) from err
    with fh:
        yield from _stream(fh, str(bundle), "", digest)


def _stream(fileobj, shown: str, inner: str, digest: str) -> Iterator[WorkItem]:
    """Members of the tar stream `fileobj`; `shown` / `inner`: its name as displayed / inside the outermost bundle."""
    current = shown
    try:
        with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                current = f"{shown}{MEMBER_SEPARATOR}{member.name}"
                inner_name = f"{inner}{MEMBER_SEPARATOR}{member.name}" if inner else member.name
                stream = tar.extractfile(member)
                assert stream is not None  # regular-file members (checked above) always have a stream
                if is_bundle(member.name):
                    yield from _stream(stream, current, inner_name, digest)
                else:
                    yield WorkItem(Path(current), stream.read(), f"{digest}:{inner_name}")
                current = shown
    except ConversionError:
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError) as err:
        # zlib / bz2 / lzma errors are OSError or EOFError subclasses or wrapped by tarfile
        raise ConversionError(
            current,
            f"the tar bundle is damaged or cut short ({type(err).__name__}: {err}); re-download it, "
            "or pass skip_bad=true to skip what cannot be read.",
        ) from err
