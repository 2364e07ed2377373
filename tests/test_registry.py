"""The one registry helper: lookups, listing, errors, lazy targets, entry points."""

from __future__ import annotations

import pytest

from nowcast_infill import registry
from nowcast_infill.errors import BadValueError, UserError


@pytest.fixture
def scratch_kind(monkeypatch):
    """A throw-away kind owned by this test module (no real package module imported)."""
    monkeypatch.setitem(registry._OWNERS, "scratch", __name__)
    monkeypatch.setitem(registry._ENTRIES, "scratch", {})
    monkeypatch.setattr(registry, "_LOADED", set(registry._LOADED))
    return "scratch"


def make_double(factor: int = 2):
    return lambda x: factor * x


def test_get_method_builds_with_options(scratch_kind):
    registry.register(scratch_kind, "double", make_double)
    assert registry.get_method(scratch_kind, "double")(3) == 6
    assert registry.get_method(scratch_kind, "double", factor=5)(3) == 15


def test_unknown_name_lists_valid_names(scratch_kind):
    registry.register(scratch_kind, "double", make_double)
    registry.register(scratch_kind, "also", make_double)
    with pytest.raises(registry.UnknownMethodError) as err:
        registry.get_method(scratch_kind, "tripple")
    assert str(err.value) == "unknown scratch 'tripple'; valid names: also, double."
    assert isinstance(err.value, UserError) and isinstance(err.value, KeyError)


def test_unknown_kind_lists_kinds():
    with pytest.raises(registry.UnknownMethodError, match="valid kinds: .*classical.*source"):
        registry.method_names("no_such_kind")


def test_bad_option_is_a_user_error_but_inner_type_error_is_not(scratch_kind):
    def broken(**_):
        raise TypeError("a bug inside the method")

    registry.register(scratch_kind, "double", make_double)
    registry.register(scratch_kind, "broken", broken)
    with pytest.raises(BadValueError, match=r"scratch 'double': options \['speed'\] not accepted"):
        registry.get_method(scratch_kind, "double", speed=1)
    with pytest.raises(TypeError, match="a bug inside") as err:
        registry.get_method(scratch_kind, "broken")
    assert not isinstance(err.value, UserError)


def test_lazy_target_and_conflicting_registration(scratch_kind):
    registry.register(scratch_kind, "lazy", f"{__name__}:make_double")
    assert registry.get_target(scratch_kind, "lazy") is make_double
    with pytest.raises(ValueError, match="already registered"):
        registry.register(scratch_kind, "lazy", print)


def test_entry_points_are_registered(scratch_kind, monkeypatch):
    from importlib import metadata

    point = metadata.EntryPoint(name="plugged", value=f"{__name__}:make_double", group="nowcast_infill.scratch")
    monkeypatch.setattr(registry.metadata, "entry_points",
                        lambda group: [point] if group == "nowcast_infill.scratch" else [])
    assert "plugged" in registry.method_names(scratch_kind)
    assert registry.get_method(scratch_kind, "plugged", factor=3)(2) == 6
