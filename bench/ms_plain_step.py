"""Plain MindSpore: the sample's ResNet50 in a minimal training loop on a fixed random batch.

Run by train_throughput.py in its own process; prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn

TRAIN_DIR = Path(__file__).resolve().parent.parent / "samples" / "resnet50" / "train" / "train_dir"
sys.path.insert(0, str(TRAIN_DIR))

import resnet  # noqa: E402


def main() -> None:
    """Time TrainOneStepCell steps and print {"images_per_s": ...} as JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--jit_level", default="O0")
    parser.add_argument("--nchw", action="store_true",
                        help="every layer NCHW with nn.Conv2d (no batch-last small maps)")
    parser.add_argument("--op_threads", type=int, default=0, help="CPU kernel threads (0: default)")
    parser.add_argument("--optimizer", default="adam", choices=["adam", "momentum"])
    parser.add_argument("--amp", default="", help="mixed precision level, e.g. O2 (float16)")
    args = parser.parse_args()
    ms.set_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE, jit_config={"jit_level": args.jit_level})
    if args.op_threads:
        ms.device_context.cpu.op_tuning.threads_num(args.op_threads)
    ms.set_seed(0)
    net = resnet.resnet50(10, batch_last=not args.nchw)
    if args.amp:
        net = ms.amp.auto_mixed_precision(net, args.amp)
    loss_fn = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
    optimizer: nn.Optimizer = (
        nn.Adam(net.trainable_params(), 0.001, weight_decay=1e-4) if args.optimizer == "adam"
        else nn.Momentum(net.trainable_params(), 0.01, 0.9, weight_decay=1e-4))
    step = nn.TrainOneStepCell(nn.WithLossCell(net, loss_fn), optimizer)
    step.set_train()
    rng = np.random.default_rng(0)
    images = Tensor(rng.standard_normal((args.batch_size, 3, 32, 32), dtype=np.float32))
    labels = Tensor(rng.integers(0, 10, args.batch_size).astype(np.int32))
    for _ in range(args.warmup):
        step(images, labels).asnumpy()
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step(images, labels)
    loss.asnumpy()
    elapsed = time.perf_counter() - start
    print(json.dumps({"images_per_s": args.steps * args.batch_size / elapsed,
                      "mindspore": ms.__version__}), flush=True)


if __name__ == "__main__":
    main()
