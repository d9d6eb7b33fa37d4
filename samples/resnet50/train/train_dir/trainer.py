"""The training loop shared by train.py and train_aim.py: arguments, runtime, log, checkpoints."""

from __future__ import annotations

import argparse
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

# oneDNN reads this once, when MindSpore first runs a kernel: on AVX-512 CPUs its default
# convolution for MindSpore's NCHW layout is a reference kernel, 10-25x slower than AVX2's.
os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")

import mindspore as ms
import mindspore.dataset as ds
import mindspore.nn as nn
import numpy as np
from data import create_dataset, find_cifar_dir
from resnet import resnet50
from steps import EvalStep, TrainStep

NUM_CLASSES = 10


def build_parser() -> argparse.ArgumentParser:
    """The command line: one --name=value per hyperparameter, input and output."""
    parser = argparse.ArgumentParser(description="Train ResNet50 on CIFAR-10 with MindSpore.")
    parser.add_argument("--data_url", required=True, help="folder with the CIFAR-10 .bin files")
    parser.add_argument("--pretrain_url", default="", help="checkpoint to start from (optional)")
    parser.add_argument("--output_url", default="output", help="folder for the checkpoints")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.001, help="peak learning rate (cosine decay)")
    parser.add_argument("--momentum", type=float, default=0.9,
                        help="SGD momentum, or Adam's beta1")
    parser.add_argument("--optimizer", default="adam", choices=["adam", "momentum"])
    parser.add_argument("--weight_decay", type=float, default=1e-4)
    parser.add_argument("--train_limit", type=int, default=0, help="train images (0 = all)")
    parser.add_argument("--test_limit", type=int, default=0, help="test images (0 = all)")
    parser.add_argument("--log_every", type=int, default=10, help="steps between loss lines")
    parser.add_argument("--keep_checkpoint_max", type=int, default=5,
                        help="epoch checkpoints kept besides best.ckpt (0 = all)")
    parser.add_argument("--workers", type=int, default=0, help="input workers (0 = by CPU count)")
    parser.add_argument("--jit_level", default="O0", choices=["O0", "O1"])
    parser.add_argument("--cpu_threads", type=int, default=0,
                        help="CPU kernel threads (0 = one per core; MindSpore's own default is 25)")
    parser.add_argument("--seed", type=int, default=1)
    return parser


def parse_args(argv: list[str] | None = None,
               parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """Known arguments; unknown ones (extra platform parameters) are reported and ignored."""
    parser = parser or build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        log(f"ignoring unknown arguments: {' '.join(unknown)}")
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            # argparse's error() exits with status 2: the training ends Failed, with this line.
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    for name in ("train_limit", "test_limit"):
        if getattr(args, name) < 0:
            parser.error(f"--{name} must be 0 (all images) or more, got {getattr(args, name)}")
    return args


def log(line: str) -> None:
    """One log line, flushed at once so the platform can stream it."""
    print(line, flush=True)


@dataclass
class EpochResult:
    """What one epoch measured."""

    epoch: int
    train_loss: float
    train_accuracy: float
    test_loss: float
    test_accuracy: float
    seconds: float


class TrainingListener:
    """Hooks into the loop (train_aim.py tracks metrics through them)."""

    def on_start(self, args: argparse.Namespace) -> None:
        """Called once, before the first step."""

    def on_step(self, epoch: int, global_step: int, loss: float) -> None:
        """Called after every training step."""

    def on_epoch(self, result: EpochResult) -> None:
        """Called after each epoch's evaluation."""

    def on_end(self) -> None:
        """Called once at the end (also after a failure)."""


def configure_runtime(args: argparse.Namespace) -> None:
    """Graph mode on the CPU with the settings measured fastest (docs/sample.md)."""
    ms.set_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE, jit_config={"jit_level": args.jit_level})
    ms.device_context.cpu.op_tuning.threads_num(args.cpu_threads or os.cpu_count() or 1)
    ms.set_seed(args.seed)
    ds.config.set_seed(args.seed)


def cosine_lr(peak: float, total_steps: int, warmup_steps: int) -> list[float]:
    """Per-step learning rates: linear warm-up to `peak`, then cosine down to peak / 100."""
    floor = peak / 100
    rates = [peak * (step + 1) / (warmup_steps + 1) for step in range(warmup_steps)]
    decay = max(total_steps - warmup_steps, 1)
    rates += [floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * step / decay))
              for step in range(total_steps - warmup_steps)]
    return rates


def create_optimizer(args: argparse.Namespace, net: nn.Cell, lrs: list[float]) -> nn.Optimizer:
    """Adam by default; SGD with momentum (the original tutorial's choice) on request."""
    # From scratch, this network (ImageNet stem, 1x1 maps in the last stage on 32x32 images)
    # diverges under SGD at lr >= 0.01 (PyTorch too); Adam at 1e-3 learns steadily.
    schedule = ms.Tensor(np.array(lrs, np.float32))
    if args.optimizer == "momentum":
        return nn.Momentum(net.trainable_params(), schedule, args.momentum,
                           weight_decay=args.weight_decay)
    return nn.Adam(net.trainable_params(), schedule, beta1=args.momentum,
                   weight_decay=args.weight_decay)


def load_pretrained(net: nn.Cell, path: str) -> None:
    """Load `path` into `net` when it exists; parameters of another shape (the head) stay new."""
    if not path:
        log("no pretrained checkpoint given: training from scratch")
        return
    file = Path(path)
    if file.is_dir():
        candidates = sorted(file.glob("*.ckpt"))
        best = file / "best.ckpt"
        file = best if best.exists() else (candidates[-1] if candidates else file / "best.ckpt")
    if not file.is_file():
        log(f"pretrained checkpoint {path} not found: training from scratch")
        return
    params = ms.load_checkpoint(str(file))
    own = {p.name: p for p in net.get_parameters()}
    replaced = [name for name, value in params.items()
                if name in own and tuple(value.shape) != tuple(own[name].shape)]
    for name in replaced:
        del params[name]
    missing, _ = ms.load_param_into_net(net, params)
    log(f"loaded pretrained checkpoint {file} ({len(params)} tensors)")
    if replaced:
        log(f"replaced the classification head for {NUM_CLASSES} classes: {', '.join(replaced)}")
    if missing:
        log(f"not in the checkpoint, trained from scratch: {len(missing)} tensors")


def save_checkpoint(net: nn.Cell, out: Path, epoch: int, keep: int) -> Path:
    """Write resnet50-<epoch>.ckpt and drop epoch checkpoints beyond the last `keep`."""
    path = out / f"resnet50-{epoch}.ckpt"
    ms.save_checkpoint(net, str(path))
    path.chmod(0o644)  # MindSpore writes checkpoints read-only for the owner
    if keep > 0:
        old = out / f"resnet50-{epoch - keep}.ckpt"
        if old.exists():
            old.unlink()
    return path


def evaluate(step: EvalStep, dataset: ds.Dataset) -> tuple[float, float]:
    """Mean loss and accuracy over `dataset`."""
    total = correct = 0
    loss_sum = 0.0
    for images, labels in dataset.create_tuple_iterator(num_epochs=1):
        loss, hits = step(images, labels)
        count = int(labels.shape[0])
        loss_sum += float(loss.asnumpy()) * count
        correct += int(hits.asnumpy())
        total += count
    return loss_sum / max(total, 1), correct / max(total, 1)


def loss_line(epoch: int, epochs: int, step: int, steps: int, loss: float, mean: float,
              step_ms: float, lr: float) -> str:
    """A MindSpore LossMonitor-style line (the platform's standard evaluation parses it)."""
    return (f"Epoch:[{epoch:3d}/{epochs:3d}], step:[{step:5d}/{steps:5d}], "
            f"loss:[{loss:.3f}/{mean:.3f}], time: {step_ms:.3f} ms, lr: {lr:.5f}")


def accuracy_line(epoch: int, epochs: int, train_loss: float, accuracy: float) -> str:
    """The per-epoch accuracy line (parsed by the platform's standard evaluation)."""
    return f"Epoch: [{epoch}/{epochs}], Train Loss: [{train_loss:.4f}], Accuracy: {accuracy:.4f}"


def train(args: argparse.Namespace, listeners: list[TrainingListener] | None = None) -> float:
    """Run the whole training; returns the best test accuracy."""
    listeners = listeners or []
    configure_runtime(args)
    data_dir = find_cifar_dir(args.data_url)
    out = Path(args.output_url)
    out.mkdir(parents=True, exist_ok=True)
    workers = args.workers or None
    train_set = create_dataset(data_dir, train=True, batch_size=args.batch_size,
                               limit=args.train_limit, workers=workers)
    test_set = create_dataset(data_dir, train=False, batch_size=args.batch_size,
                              limit=args.test_limit, workers=workers)
    steps = train_set.get_dataset_size()
    if steps == 0:
        raise SystemExit(f"fewer training images than one batch ({args.batch_size})")
    log(f"ResNet50 on CIFAR-10 from {data_dir}: {steps * args.batch_size} train images/epoch, "
        f"batch {args.batch_size}, {steps} steps/epoch, {args.epochs} epochs; MindSpore "
        f"{ms.__version__} CPU, graph mode {args.jit_level}, "
        f"ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', '')}, "
        f"{os.cpu_count()} cores")

    net = resnet50(NUM_CLASSES)
    load_pretrained(net, args.pretrain_url)
    # Warm up over a tenth of the run, at most two epochs (a from-scratch start is fragile).
    lrs = cosine_lr(args.lr, steps * args.epochs, min(steps * args.epochs // 10, 2 * steps))
    optimizer = create_optimizer(args, net, lrs)
    loss_fn = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
    train_step = TrainStep(net, loss_fn, optimizer)
    eval_step = EvalStep(net, loss_fn)
    for listener in listeners:
        listener.on_start(args)

    best = -1.0
    batches = train_set.create_tuple_iterator(num_epochs=args.epochs)
    try:
        for epoch in range(1, args.epochs + 1):
            train_step.set_train(True)
            started = tick = time.perf_counter()
            losses: list[float] = []
            correct = 0
            # The iterator ends each epoch with StopIteration; one `for` per epoch.
            for step, (images, labels) in enumerate(batches, start=1):
                loss_t, logits = train_step(images, labels)
                loss = float(loss_t.asnumpy())
                losses.append(loss)
                correct += int((logits.asnumpy().argmax(axis=1) == labels.asnumpy()).sum())
                global_step = (epoch - 1) * steps + step
                for listener in listeners:
                    listener.on_step(epoch, global_step, loss)
                if step % args.log_every == 0 or step == steps:
                    now = time.perf_counter()
                    interval = step % args.log_every or args.log_every
                    log(loss_line(epoch, args.epochs, step, steps, loss, sum(losses) / step,
                                  (now - tick) * 1000 / interval, lrs[global_step - 1]))
                    tick = now
            train_seconds = time.perf_counter() - started
            net.set_train(False)
            test_loss, accuracy = evaluate(eval_step, test_set)
            result = EpochResult(epoch, sum(losses) / steps, correct / (steps * args.batch_size),
                                 test_loss, accuracy, time.perf_counter() - started)
            log(accuracy_line(epoch, args.epochs, result.train_loss, accuracy))
            path = save_checkpoint(net, out, epoch, args.keep_checkpoint_max)
            if accuracy > best:
                best = accuracy
                shutil.copyfile(path, out / "best.ckpt")
            log(f"epoch {epoch}: train {train_seconds:.1f} s "
                f"({steps * args.batch_size / train_seconds:.1f} images/s), "
                f"test loss {test_loss:.4f}, epoch {result.seconds:.1f} s, saved {path.name}, "
                f"best accuracy {best:.4f}")
            for listener in listeners:
                listener.on_epoch(result)
    finally:
        for listener in listeners:
            listener.on_end()
    return best


def main(argv: list[str] | None = None) -> None:
    """Entry point of train.py."""
    best = train(parse_args(argv))
    log(f"training finished, best test accuracy {best:.4f}")
