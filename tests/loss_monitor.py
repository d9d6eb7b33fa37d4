"""A quick boot file printing MindSpore LossMonitor-style lines, for standard evaluations."""

from __future__ import annotations

LOSS_MONITOR_TRAIN = """
import argparse
p = argparse.ArgumentParser()
p.add_argument("--epochs", type=int, default=2)
p.add_argument("--lr", type=float, default=0.001)
a, _ = p.parse_known_args()
for e in range(1, a.epochs + 1):
    for s in range(1, 5):
        loss = 2.3 / (e * 4 + s) ** 0.3
        print(f"Epoch:[{e:3d}/{a.epochs:3d}], step:[{s:5d}/    4], "
              f"loss:[{loss:.3f}/{loss + 0.004:.3f}], time: 12.3 ms, lr: {a.lr:.5f}", flush=True)
    print(f"Epoch: [{e}/{a.epochs}], Train Loss: [{loss:.3f}], Accuracy: {0.2 * e + 0.01:.2f}",
          flush=True)
"""
