"""Leaving a distributed run cleanly."""

from __future__ import annotations


def leave_process_group() -> None:
    """Meet every rank, then tear the process group down; a no-op outside a distributed run.

    A rank that exits while a peer still holds an open gloo connection to it can make that
    peer abort in gloo's destructor ("terminate called without an active exception",
    SIGABRT), and torchrun then waits for the aborted node: so no rank leaves before all
    have finished their last collective.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
