"""Rank-aware logging: under DDP every rank runs the same code, but an event is reported once."""

from __future__ import annotations

import logging
import os
import sys


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

    def log(self, level, msg, *args, all_ranks: bool = False, **kwargs):  # noqa: D102
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
