"""One registry for every swappable piece: `get_method(kind, name, **options)`.

A *kind* is a family of interchangeable things (`source`: radar importers, `mask`: hole-mask
generators, `classical`: classical infilling/nowcasting methods, `metric`: verification
scores, `loss`: training losses). Each kind is owned by one module, which registers its
entries when it is imported; this module only knows which module owns which kind, so the
lookup itself never imports more than the kind asked for (`ni-convert` does not import
pySTEPS to find the RADOLAN reader).

Third-party packages add entries without touching this package through the entry-point group
`nowcast_infill.<kind>` (e.g. `[project.entry-points."nowcast_infill.source"] mine =
"my_pkg.reader:MyImporter"`); they are loaded on first lookup of that kind.

An unknown name raises `UnknownMethodError` (a `UserError`, also a `KeyError` and a
`ValueError` for old callers) whose message lists the valid names, as pySTEPS'
`interface.get_method` does.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from importlib import metadata
from typing import Any

from nowcast_infill.errors import BadValueError, UserError

# kind -> the module whose import registers that kind's entries (the kind's single owner)
_OWNERS: dict[str, str] = {
    "source": "nowcast_infill.io.importers",
    "mask": "nowcast_infill.data.masks",
    "classical": "nowcast_infill.baselines",
    "metric": "nowcast_infill.metrics.scores",
    "loss": "nowcast_infill.models.losses",
}
# kind -> name -> the factory, or "module:attribute" resolved on first use (keeps heavy
# dependencies such as wradlib or pysteps out of a lookup that does not need them)
_ENTRIES: dict[str, dict[str, Callable[..., Any] | str]] = {}
_LOADED: set[str] = set()


class UnknownMethodError(UserError, KeyError, ValueError):
    """`name` is not registered for `kind`; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def register(kind: str, name: str, target: Callable[..., Any] | str) -> None:
    """Register `target` (a factory or class, or a lazy "module:attribute") as `name` of `kind`.

    Registering a second, different target under a taken name is refused: two pieces of
    code would otherwise silently compete for one config name.
    """
    entries = _ENTRIES.setdefault(kind, {})
    if name in entries and entries[name] != target:
        raise ValueError(f"{kind} {name!r} is already registered as {entries[name]!r}; pick another name.")
    entries[name] = target


def _load(kind: str) -> dict[str, Callable[..., Any] | str]:
    if kind not in _LOADED:
        if kind not in _OWNERS:
            raise UnknownMethodError(f"unknown kind {kind!r}; valid kinds: {', '.join(sorted(_OWNERS))}.")
        _LOADED.add(kind)
        importlib.import_module(_OWNERS[kind])
        for entry_point in metadata.entry_points(group=f"nowcast_infill.{kind}"):
            register(kind, entry_point.name, entry_point.value)
    return _ENTRIES.get(kind, {})


def method_names(kind: str) -> list[str]:
    """The registered names of `kind`, sorted."""
    return sorted(_load(kind))


def get_target(kind: str, name: str) -> Callable[..., Any]:
    """The registered factory of `name` (resolving a lazy "module:attribute" reference)."""
    entries = _load(kind)
    if name not in entries:
        raise UnknownMethodError(f"unknown {kind} {name!r}; valid names: {', '.join(sorted(entries))}.")
    target = entries[name]
    if isinstance(target, str):
        module_name, _, attribute = target.partition(":")
        target = getattr(importlib.import_module(module_name), attribute)
        entries[name] = target
    return target


def get_method(kind: str, name: str, **options: Any) -> Any:
    """Build `name` of `kind` with its `options`.

    Raises `UnknownMethodError` listing the valid names, or `BadValueError` naming the method
    and the option it did not accept.
    """
    factory = get_target(kind, name)
    try:
        # checked before the call so that a TypeError raised inside the method stays a bug
        inspect.signature(factory).bind(**options)
    except TypeError as err:
        raise BadValueError(f"{kind} {name!r}: options {sorted(options)} not accepted ({err}).") from None
    except ValueError:  # a builtin without a readable signature: let the call speak
        pass
    return factory(**options)


__all__ = ["UnknownMethodError", "get_method", "get_target", "method_names", "register"]
