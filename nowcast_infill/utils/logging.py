"""Rank-aware logging: under DDP every rank runs the same code, but an event is reported once."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any


def current_rank() -> int:
    """Global rank of this process from the launcher's environment (0 when not distributed).

    Read before the Trainer exists too (torchrun sets RANK, srun SLURM_PROCID, Lightning's own
    launcher LOCAL_RANK/NODE_RANK), so messages printed during config composition are also once.
    """
    for name in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        value = os.environ.get(name)
        if value not in (None, ""):
            try:
                return int(value)
            except ValueError:
                continue
    # Lightning's rank, once Lightning is loaded (it also knows launchers not listed above);
    # not imported here: the ni-* commands check their config before loading torch.
    rank_zero = sys.modules.get("lightning.fabric.utilities.rank_zero")
    return int(getattr(getattr(rank_zero, "rank_zero_only", None), "rank", 0) or 0)


class RankZeroLogger(logging.LoggerAdapter):
    """A `logging.Logger` whose records are emitted on global rank 0 only (or on every rank,
    prefixed with the rank, when called with `all_ranks=True`)."""

    # The base's **kwargs are typed `object`, so mypy would have all_ranks accept any object too.
    def log(self, level: int, msg: object, *args: object, all_ranks: bool = False, **kwargs: Any) -> None:  # type: ignore[override]
        if not self.isEnabledFor(level):
            return
        rank = current_rank()
        if all_ranks:
            self.logger.log(level, f"[rank {rank}] {msg}", *args, **kwargs)
        elif rank == 0:
            self.logger.log(level, msg, *args, **kwargs)


def get_logger(name: str = "nowcast_infill") -> RankZeroLogger:
    """Logger for `name` that writes one line per event, not one per rank."""
    return RankZeroLogger(logging.getLogger(name), {})


def rank_zero_print(*args, **kwargs) -> None:
    """`print` on global rank 0 only."""
    if current_rank() == 0:
        print(*args, **kwargs, flush=True)


# Messages known to be harmless in every run of ours, silenced so results stay readable.
# Each pattern is matched against the start of the message.
_HARMLESS_WARNINGS = (
    # torch's pytree API renamed LeafSpec; Lightning 2.6 still calls the old name. Nothing to do for us.
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
)
_HARMLESS_INFO = (
    # Lightning advertises its hosted services (litlogger, litmodels) in every Trainer.
    "💡 Tip: For seamless cloud",
)


class _DropPrefixes(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(self.prefixes)


def quiet_known_noise() -> None:
    """Silence messages known to be harmless (idempotent); everything else is shown.

    - Lightning's "The `srun` command is available on your system but is not used" hint:
      right for a multi-task Slurm job started without srun (kept there: SLURM_NTASKS > 1),
      wrong for a single process on a login node or in a one-task job, where it showed in
      every run. Our sbatch templates start every task with srun.
    - torch's `_pytree` LeafSpec deprecation raised inside Lightning (_HARMLESS_WARNINGS).
    - Lightning's litlogger/litmodels tips (_HARMLESS_INFO).
    - Lightning's second copy of its messages where the root logger already prints them.
    The anonymous-W&B warning is avoided where it is caused (instantiate_loggers), and the
    per-metric `sync_dist` warnings by logging epoch metrics with sync_dist=True (models/module.py).
    """
    import warnings

    for pattern in _HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    if _first_int_env("SLURM_NTASKS") <= 1:
        warnings.filterwarnings("ignore", message="The `srun` command is available on your system but is not used")
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        target = logging.getLogger(name)
        if not any(isinstance(f, _DropPrefixes) for f in target.filters):
            target.addFilter(_DropPrefixes(_HARMLESS_INFO))
    if logging.getLogger().handlers:
        # Inside a Hydra job the root logger writes every record (console and the job's log
        # file); Lightning's own console handlers would print each of its messages a second time.
        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            target = logging.getLogger(name)
            for handler in [h for h in target.handlers if type(h) is logging.StreamHandler]:
                target.removeHandler(handler)
            target.propagate = True


def _first_int_env(name: str) -> int:
    value = os.environ.get(name, "").split("(")[0].split(",")[0]
    return int(value) if value.isdigit() else 1
