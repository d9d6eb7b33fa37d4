"""train.py plus Aim tracking: python train_aim.py --data_url=DIR --aim_repo=db/ ..."""

from __future__ import annotations

import argparse
from pathlib import Path

from aim import Repo, Run
from trainer import EpochResult, TrainingListener, build_parser, log, parse_args, train


class AimTracker(TrainingListener):
    """Tracks `loss` per step, and `loss`/`accuracy` per epoch for the train and test subsets."""

    def __init__(self, repo_path: str) -> None:
        self.repo_path = Path(repo_path)
        self.run: Run | None = None

    def on_start(self, args: argparse.Namespace) -> None:
        """Open (and initialise when missing) the Aim repo and record the hyperparameters."""
        self.repo_path.mkdir(parents=True, exist_ok=True)
        repo = Repo.from_path(str(self.repo_path), init=True)
        self.run = Run(repo=repo, experiment="resnet50-cifar10", capture_terminal_logs=False)
        self.run["hparams"] = {
            "learning_rate": args.lr, "batch_size": args.batch_size, "momentum": args.momentum,
            "weight_decay": args.weight_decay, "epochs": args.epochs,
            "train_limit": args.train_limit, "test_limit": args.test_limit,
        }
        log(f"tracking into the Aim repo {self.repo_path} (run {self.run.hash})")

    def on_step(self, epoch: int, global_step: int, loss: float) -> None:
        """The training loss of every step."""
        assert self.run is not None
        self.run.track(loss, name="loss", step=global_step, epoch=epoch)

    def on_epoch(self, result: EpochResult) -> None:
        """Epoch means on the training batches and on the test set."""
        assert self.run is not None
        for subset, loss, accuracy in (
            ("train", result.train_loss, result.train_accuracy),
            ("test", result.test_loss, result.test_accuracy),
        ):
            context = {"subset": subset}
            self.run.track(loss, name="loss", step=result.epoch, epoch=result.epoch,
                           context=context)
            self.run.track(accuracy, name="accuracy", step=result.epoch, epoch=result.epoch,
                           context=context)

    def on_end(self) -> None:
        """Close the run so the repo is complete when the process exits."""
        if self.run is not None:
            self.run.close()


def main(argv: list[str] | None = None) -> None:
    """Entry point: the arguments of train.py plus --aim_repo."""
    parser = build_parser()
    parser.add_argument("--aim_repo", default="db/", help="folder of the Aim repo (holds .aim)")
    args = parse_args(argv, parser)
    best = train(args, [AimTracker(args.aim_repo)])
    log(f"training finished, best test accuracy {best:.4f}")


if __name__ == "__main__":
    main()
