"""A minimal training loop on ``sample_data`` with ``avfusion.FusionDataset``.

Runs in a few seconds (``python examples/train_loop.py [--data sample_data] [--workers 2]``):
ten-sweep LiDAR, the colour cameras with their ``lidar2img`` matrices and sparse depth maps,
and the boxes in the ego frame, batched by ``avfusion.collate`` (point clouds padded) and fed
to a toy model: a linear regression from per-camera LiDAR depth statistics to the number of
boxes (torch when it is installed, else numpy). It shows the data flow, not a detector.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

import avfusion as av
from avfusion.synth import ensure_sample_data

CAMERAS = ("CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT")


def features(batch: dict[str, Any]) -> np.ndarray:
    """(B, 7) features: points per sample (in 100k) and mean depth per camera (in 100 m)."""
    n = np.asarray(batch["lengths"]["points/LIDAR_TOP"], dtype=np.float64) / 1e5
    cols = [n]
    for cam in CAMERAS:
        d = np.asarray(batch["depth"][cam], dtype=np.float64)
        hit = d > 0
        cols.append((d * hit).sum(axis=(1, 2)) / np.maximum(hit.sum(axis=(1, 2)), 1) / 100)
        cols.append(hit.mean(axis=(1, 2)) * 10)
    return np.stack(cols, axis=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--data", type=Path, default=Path(__file__).resolve().parents[1] / "sample_data"
    )
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (0: no torch)")
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args(argv)

    root = ensure_sample_data(args.data)
    dataset = av.FusionDataset(
        root,
        sensors=("LIDAR_TOP", *CAMERAS),
        sweeps=10,
        outputs=("points", "calib", "depth", "boxes", "time_diffs"),
        points_frame="ego",
        max_points=100_000,  # a random, seeded subset of each aggregated cloud
        seed=0,
    )
    try:
        import torch
        from torch.utils.data import DataLoader
    except ImportError:
        torch = None
    start = time.perf_counter()
    seen = 0
    if torch is not None:
        # numpy batches (collate pads the clouds); the model's inputs become tensors here.
        # collate_fn=partial(av.collate, to_torch=True) would give tensors for every array.
        loader = DataLoader(dataset, batch_size=4, shuffle=True, num_workers=args.workers,
                            collate_fn=av.collate, generator=torch.Generator().manual_seed(0))  # fmt: skip
        model = torch.nn.Linear(7, 1, dtype=torch.float64)
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        for epoch in range(args.epochs):
            for batch in loader:
                x = torch.from_numpy(features(batch))
                y = torch.tensor(
                    [float(len(lab)) for lab in batch["boxes"]["label"]], dtype=torch.float64
                )
                loss = torch.nn.functional.mse_loss(model(x).squeeze(1), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                seen += len(y)
                print(f"epoch {epoch} batch of {len(y)}: points {batch['points']['LIDAR_TOP'].shape}, "
                      f"lidar2img {batch['calib']['CAM_FRONT']['lidar2img'].shape}, loss {loss.item():.2f}")  # fmt: skip
    else:
        w = np.zeros(7)
        for epoch in range(args.epochs):
            for i in range(0, len(dataset), 4):
                batch = av.collate([dataset[k] for k in range(i, min(i + 4, len(dataset)))])
                x = features(batch)
                y = np.array([float(len(lab)) for lab in batch["boxes"]["label"]])
                err = x @ w - y
                w -= 0.05 * 2 * x.T @ err / len(y)
                seen += len(y)
                print(f"epoch {epoch} batch of {len(y)}: points {batch['points']['LIDAR_TOP'].shape}, "
                      f"loss {float(np.mean(err**2)):.2f}")  # fmt: skip
    elapsed = time.perf_counter() - start
    print(f"{seen} samples in {elapsed:.1f} s ({seen / elapsed:.1f} samples/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
