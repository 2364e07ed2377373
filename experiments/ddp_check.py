"""Small, self-contained Lightning run for checking distributed training plumbing.

It trains a tiny convolutional net on deterministic synthetic rain-like fields and
writes, from global rank 0 only:

- ``OUT/weights.pt``  -- final ``state_dict`` of the net (float32 tensors),
- ``OUT/init_weights.pt`` -- the same before the first step,
- ``OUT/result.json`` -- world size, node count, global step and the test metrics,
- ``OUT/checkpoints/last.ckpt`` -- Lightning's last checkpoint (``--checkpoint``).

The same command runs as one process, as DDP over several local processes
(``--strategy ddp --devices 2``), under ``torchrun --nnodes 2`` or under ``srun`` on
Slurm; Lightning picks the cluster environment from the variables each launcher sets.
Used by ``tests/test_ddp.py`` and ``tests/test_slurm.py`` to compare one process with
DDP at the same global batch.

Why the run is exactly comparable across world sizes:

- no batch norm: per-rank batch statistics would make DDP differ from one process;
- every sample has the same number of pixels and the loss is a per-pixel mean, so
  the DDP-averaged gradient equals the gradient of the global-batch mean;
- every world size draws the same seeded permutation (a DistributedSampler is used
  even for one process; Lightning would otherwise shuffle differently with one process
  and with several) and the sample count divides by the global batch: rank ``r`` takes
  ``perm[r::world_size]``, so global batch ``k`` is ``perm[k*B:(k+1)*B]`` whatever the
  world size, with no padding;
- test metrics are torchmetrics sums and counts, reduced across ranks by summation.

Example::

    python experiments/ddp_check.py --out /tmp/one --global-batch 8 --max-steps 4
    python experiments/ddp_check.py --out /tmp/two --global-batch 8 --max-steps 4 \\
        --strategy ddp --devices 2
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import signal
from datetime import timedelta
from pathlib import Path

import lightning as L
import torch
import torchmetrics
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import DDPStrategy

from nowcast_infill.utils.distributed import leave_process_group
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset


def synthetic_rain_fields(n_samples: int, size: int, seed: int) -> TensorDataset:
    """Deterministic input/target pairs for a learnable smoothing task.

    Returns a dataset of ``x (1, size, size)`` and ``y (1, size, size)``, both mm/h:
    ``x`` is exponentially distributed rain with about half the pixels dry, ``y`` is ``x``
    smoothed by a 3x3 mean (a stand-in for the spatial structure a model learns).
    """
    generator = torch.Generator().manual_seed(seed)
    # Exponential amounts by inverse transform: torch.distributions cannot take a
    # Generator, and the data must not depend on the global RNG state of each rank.
    u = torch.rand(n_samples, 1, size, size, generator=generator)
    wet = torch.rand(n_samples, 1, size, size, generator=generator) > 0.5
    x = (-torch.log1p(-u) * 2.0) * wet  # exponential rain amounts, mean 2 mm/h where wet
    y = nn.functional.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
    return TensorDataset(x.float(), y.float())


class TinyConvNet(nn.Module):
    """Two 3x3 convolutions, no normalisation layers: ``(B, 1, H, W) -> (B, 1, H, W)``, mm/h."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 1, 3, padding=1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class DDPCheckModule(L.LightningModule):
    def __init__(self, lr: float) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = TinyConvNet()
        self.test_mse = torchmetrics.MeanSquaredError()
        self.test_mae = torchmetrics.MeanAbsoluteError()

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.log("train/loss", loss, sync_dist=True)
        return loss

    def test_step(self, batch, batch_idx):
        x, y = batch
        pred = self.net(x)
        self.test_mse.update(pred, y)
        self.test_mae.update(pred, y)
        self.log("test/mse", self.test_mse)
        self.log("test/mae", self.test_mae)

    def configure_optimizers(self):
        return torch.optim.SGD(self.net.parameters(), lr=self.hparams.lr, momentum=0.9)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="output folder (shared by all ranks)")
    p.add_argument("--devices", type=int, default=1, help="processes per node")
    p.add_argument("--num-nodes", type=int, default=1)
    p.add_argument("--strategy", default="auto", help="auto, ddp, ddp_spawn, ...")
    p.add_argument("--global-batch", type=int, default=8, help="samples per optimiser step over all ranks")
    p.add_argument("--max-steps", type=int, default=4)
    p.add_argument("--n-samples", type=int, default=32)
    p.add_argument("--size", type=int, default=16, help="field height = width, pixels")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", action="store_true", help="write OUT/checkpoints/last.ckpt")
    p.add_argument(
        "--pg-timeout-s", type=float, default=None,
        help="with --strategy ddp: process-group timeout (joining it and every collective); a rank whose "
        "peer is gone fails after this instead of torch's default 30 min",
    )  # fmt: skip
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    # `kill -USR2 <pid>` prints every thread's stack to stderr: where a hung rank is stuck
    # (rendezvous, a collective, ...) ends up in its log (tests/process_watch.py does this).
    faulthandler.register(signal.SIGUSR2, all_threads=True)
    # Two cores are shared by every rank on the test machine; more threads only thrash.
    torch.set_num_threads(1)
    L.seed_everything(args.seed, workers=True)
    strategy = args.strategy
    if args.pg_timeout_s is not None:
        if strategy != "ddp":
            raise SystemExit(f"--pg-timeout-s needs --strategy ddp, not {strategy!r}")
        strategy = DDPStrategy(timeout=timedelta(seconds=args.pg_timeout_s))

    trainer = L.Trainer(
        accelerator="cpu",
        devices=args.devices,
        num_nodes=args.num_nodes,
        strategy=strategy,
        max_steps=args.max_steps,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=args.checkpoint,
        callbacks=[ModelCheckpoint(dirpath=args.out / "checkpoints", save_last=True)] if args.checkpoint else [],
        deterministic=True,
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
    )
    world_size = trainer.world_size
    if args.global_batch % world_size or args.n_samples % args.global_batch:
        raise SystemExit(
            f"--global-batch {args.global_batch} must be divisible by the world size {world_size} and divide "
            f"--n-samples {args.n_samples}; otherwise ranks would see padded or uneven batches"
        )
    per_device_batch = args.global_batch // world_size
    dataset = synthetic_rain_fields(args.n_samples, args.size, args.seed)

    def loader(shuffle: bool) -> DataLoader:
        sampler = DistributedSampler(
            dataset, num_replicas=world_size, rank=trainer.global_rank, shuffle=shuffle, seed=args.seed
        )
        return DataLoader(dataset, batch_size=per_device_batch, sampler=sampler)

    if trainer.is_global_zero:
        print(
            f"ddp_check: world_size={world_size} num_nodes={trainer.num_nodes} "
            f"global_batch={args.global_batch} per_device_batch={per_device_batch}",
            flush=True,
        )

    module = DDPCheckModule(lr=args.lr)
    if trainer.is_global_zero:
        args.out.mkdir(parents=True, exist_ok=True)
        # Lets a test tell "DDP equals one process" from "neither trained at all".
        torch.save({k: v.detach().clone() for k, v in module.net.state_dict().items()}, args.out / "init_weights.pt")
    trainer.fit(module, train_dataloaders=loader(shuffle=True))
    test_metrics = trainer.test(module, dataloaders=loader(shuffle=False), verbose=False)[0]

    result = {
        "world_size": world_size,
        "num_nodes": trainer.num_nodes,
        "global_rank": trainer.global_rank,
        "global_step": trainer.global_step,
        "metrics": {k: float(v) for k, v in test_metrics.items()},
        "master_addr": os.environ.get("MASTER_ADDR"),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    }
    if trainer.is_global_zero:
        torch.save({k: v.detach().cpu() for k, v in module.net.state_dict().items()}, args.out / "weights.pt")
        (args.out / "result.json").write_text(json.dumps(result, indent=2))
        print(f"ddp_check: done {json.dumps(result)}", flush=True)
    leave_process_group()
    return result


if __name__ == "__main__":
    main()
