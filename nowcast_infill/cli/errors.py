"""One line per user mistake, for every `ni-*` command.

`hydra_command(name)` replaces `@hydra.main(config_name=name)`. The command it makes:

- prints a user mistake as ONE line, `ni-<name>: error: <what is wrong and the fix>`, on
  stderr and exits with status 2. A user mistake is a `UserError` (our own checks; also
  when it is the `__cause__` of another exception, e.g. Hydra's InstantiationException),
  a required `???` key left unset, or an error of Hydra's while composing the config
  (unknown key, bad override syntax, missing config group option);
- keeps the traceback (then the line, still status 2) with `HYDRA_FULL_ERROR=1` or
  `-v`/`--verbose` anywhere on the command line (the flag is taken out of `sys.argv`
  before Hydra parses it: Hydra's parser does not know it);
- lets every other exception (a bug) end the command with its full traceback.

Hydra prints its own errors and exits 1 inside `hydra._internal.utils.run_and_report`,
which every `@hydra.main` goes through; while the command runs that function is replaced
by one that lets the exception through, so it reaches the handler here.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import hydra
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from nowcast_infill.cli import CONFIG_DIR
from nowcast_infill.errors import UserError
from nowcast_infill.utils.logging import quiet_known_noise

VERBOSE_FLAGS = ("-v", "--verbose")
EXIT_USER_ERROR = 2


class MissingValueError(UserError, ValueError):
    """A required config key (`???` in the yaml) was not given."""


def hydra_command(config_name: str) -> Callable[[Callable[[DictConfig], Any]], Callable[..., Any]]:
    """Decorator: `@hydra.main` on `conf/<config_name>.yaml` for the command `ni-<config_name>`.

    The decorated `main()` runs the command line; `main(cfg)` runs the task on a composed
    config (as `@hydra.main` allows) with the same required-key check, raising as usual.
    """
    prog = f"ni-{config_name}"

    def decorate(task: Callable[[DictConfig], Any]) -> Callable[..., Any]:
        verbose = [False]  # set by main() from the command line, read by the task

        # functools.wraps: Hydra follows __wrapped__ to name the job after the task's module.
        @functools.wraps(task)
        def checked_task(cfg: DictConfig) -> Any:
            require_set(cfg)
            return task(cfg)

        @functools.wraps(task)
        def reporting_task(cfg: DictConfig) -> Any:
            # Caught inside the task: past it, Hydra writes "Error executing job with
            # overrides: [...]" to stderr before re-raising, a second line.
            with exit_on_user_error(prog, verbose[0]):
                return checked_task(cfg)

        hydra_main = hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name=config_name)(reporting_task)

        @functools.wraps(task)
        def main(cfg: DictConfig | None = None) -> Any:
            quiet_known_noise()
            if cfg is not None:
                return checked_task(cfg)
            verbose[0] = take_verbose_flag(sys.argv) or os.environ.get("HYDRA_FULL_ERROR") == "1"
            # Outside: Hydra's own errors (composition, override syntax) come before the task.
            with exit_on_user_error(prog, verbose[0]), _hydra_lets_errors_through():
                return hydra_main()

        return main

    return decorate


def require_set(cfg: DictConfig) -> None:
    """Raise MissingValueError naming the first `???` key of `cfg` the user did not set."""
    missing = next((key for key in _missing_keys(cfg, "") if not _given_otherwise(cfg, key)), None)
    if missing is not None:
        raise MissingValueError(_missing_message(missing))


def _given_otherwise(cfg: DictConfig, key: str) -> bool:
    """A `???` key that another key answers: a list in data.stores stands in for data.store."""
    return key == "data.store" and bool(OmegaConf.select(cfg, "data.stores", default=None))


def _missing_keys(node: DictConfig | ListConfig, prefix: str) -> Iterator[str]:
    # Not OmegaConf.missing_keys: it resolves interpolations, and some configs hold ones
    # (e.g. ${task.name} in a model node of ni-infill) that only resolve where they are used.
    # Any: OmegaConf types its accessors narrower than the keys a DictConfig holds (DictKeyType).
    keys: Iterable[Any] = node.keys() if isinstance(node, DictConfig) else range(len(node))
    for key in keys:
        full = f"{prefix}{key}" if isinstance(node, DictConfig) else f"{prefix.rstrip('.')}[{key}]"
        if OmegaConf.is_missing(node, key):
            yield full
        elif not OmegaConf.is_interpolation(node, key) and isinstance(node[key], (DictConfig, ListConfig)):
            yield from _missing_keys(node[key], full + ".")


@contextlib.contextmanager
def exit_on_user_error(prog: str, verbose: bool):
    """A user mistake raised inside: `prog: error: <one line>` on stderr and exit 2
    (after the traceback when `verbose`); any other exception passes unchanged."""
    try:
        yield
    except Exception as err:
        message = user_error_message(err)
        if message is None:
            raise
        if verbose:
            traceback.print_exc()
        print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
        sys.exit(EXIT_USER_ERROR)


def take_verbose_flag(argv: list[str]) -> bool:
    """Remove every `-v`/`--verbose` from `argv[1:]` in place; True when there was one."""
    kept = [arg for arg in argv[1:] if arg not in VERBOSE_FLAGS]
    found = len(kept) < len(argv) - 1
    argv[1:] = kept
    return found


def user_error_message(err: BaseException) -> str | None:
    """The one-line explanation of `err` when it is a user mistake, None when it is a bug."""
    from hydra.errors import (
        ConfigCompositionException,
        MissingConfigException,
        OverrideParseException,
        SearchPathException,
    )

    # Only explicit causes (`raise ... from err`): an error raised while handling a user
    # error is a bug of the handler, not the user's.
    link: BaseException | None = err
    while link is not None:
        if isinstance(link, UserError):
            return one_line(str(link))
        link = link.__cause__
    if isinstance(err, MissingMandatoryValue):
        return _missing_message(err.full_key or "?")
    if isinstance(err, OverrideParseException):
        return (
            f"{err.override}: not a valid override ({err.message.strip().splitlines()[0]}); write key=value, "
            "quote values holding spaces, brackets or commas."
        )
    if isinstance(err, MissingConfigException):
        return _missing_config_option(err)
    if isinstance(err, (ConfigCompositionException, SearchPathException)):
        cause = err.__cause__
        detail = f" ({_omegaconf_first_line(cause)})" if cause is not None else ""
        return one_line(str(err)) + detail
    return None


def _missing_message(key: str) -> str:
    return f"{key}: required but not set (??? in the config); pass {key}=<value> on the command line."


def one_line(text: str) -> str:
    """`text` with its lines joined by spaces (tabs and blank lines dropped)."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _omegaconf_first_line(err: BaseException) -> str:
    # OmegaConf appends "full_key: ..., object_type=..." lines; the first line says it all.
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def _missing_config_option(err: Any) -> str:
    """`model=nosuch`: Hydra lists the valid options one per line; keep them on one line."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    options = list(err.options or [])
    if not options:
        return " ".join(lines)
    group, _, name = (err.missing_cfg_file or "?/?").rpartition("/")
    return f"{group}={name}: no such option ({lines[0]}); choose {group}= one of: {', '.join(options)}."


@contextlib.contextmanager
def _hydra_lets_errors_through():
    """Make `@hydra.main` raise instead of printing its report and exiting 1 (see module doc)."""
    from hydra._internal import utils as hydra_utils

    original = hydra_utils.run_and_report
    hydra_utils.run_and_report = _run_and_raise
    try:
        yield
    finally:
        hydra_utils.run_and_report = original


def _run_and_raise(func: Callable[[], Any]) -> Any:
    return func()
