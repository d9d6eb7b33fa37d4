"""Commands on a finished training's results: evaluate in Aim, predict images, publish a model."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urljoin

import typer
from rich.table import Table

from app.cli import client_format as fmt
from app.cli.client_api import SLOW_TIMEOUT, Api, TokenOption, UrlOption, connect, die, err, out
from app.cli.client_registry import VisibilityFlag
from app.cli.client_trainings import IdArg, JsonFlag
from app.statuses import EvaluationStatus

POLL_S = 1.0
# The server fails a report that is not up within 300 s; wait a little longer than that.
WAIT_LIMIT_S = 330.0
BAR_WIDTH = 20

CheckpointOption = Annotated[str | None, typer.Option(
    "--checkpoint", metavar="NAME",
    help="A checkpoint path or file name from the training's outputs; default: best.ckpt, "
    "else the newest.")]


def absolute(api: Api, path: str) -> str:
    """A server path (`/trainings/7/aim/...`) as a full URL of the server."""
    return urljoin(api.url + "/", path)


def _wait_running(api: Api, path: str, evaluation: dict[str, Any]) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_LIMIT_S
    with err.status("starting the Aim report ..."):
        while evaluation["status"] == EvaluationStatus.STARTING:
            if time.monotonic() > deadline:
                die(f"the report is still starting after {WAIT_LIMIT_S:.0f} s",
                    f"check later with GET {path}")
            time.sleep(POLL_S)
            evaluation = api.get_json(path)
    return evaluation


def evaluate(training_id: IdArg,
             aim_path: Annotated[str | None, typer.Option(
                 "--aim-path", metavar="PATH",
                 help="Custom evaluation: the folder holding .aim that the training's code "
                 "wrote, e.g. ./db/.")] = None,
             standard: Annotated[bool, typer.Option(
                 "--standard", help="Standard evaluation: build the report from the "
                 "training log (the default).")] = False,
             wait: Annotated[bool, typer.Option(
                 "--wait", help="Wait until the report is up (or failed).")] = False,
             as_json: JsonFlag = False,
             url: UrlOption = None, token: TokenOption = None) -> None:
    """Start the Aim report of a Completed training and print its URL."""
    if aim_path is not None and standard:
        die("--aim-path (custom) and --standard exclude each other")
    body: dict[str, Any] = ({"type": "custom", "aim_path": aim_path} if aim_path is not None
                            else {"type": "standard"})
    path = f"/api/v1/trainings/{training_id}/evaluation"
    with connect(url, token) as api:
        evaluation = api.request("POST", path, json=body, timeout=SLOW_TIMEOUT).json()
        if wait:
            evaluation = _wait_running(api, path, evaluation)
        report = absolute(api, evaluation["report_url"])
    if as_json:
        out.print_json(data={**evaluation, "report_url": report})
    else:
        out.print(f"evaluation of training {training_id} ({evaluation['type']}): "
                  f"{evaluation['status']}")
    if evaluation["status"] == EvaluationStatus.FAILED:
        die("the report failed", *str(evaluation.get("error") or "no reason given").splitlines())
    if evaluation["status"] == EvaluationStatus.EXPIRED:
        die("the report stopped before it was used: run the command again")
    if not as_json:
        out.print(f"report: {report}", soft_wrap=True)


def _bar(probability: float) -> str:
    filled = round(max(0.0, min(1.0, probability)) * BAR_WIDTH)
    return "█" * filled + "·" * (BAR_WIDTH - filled)


def _show_prediction(image: Path, answer: dict[str, Any], top: int) -> None:
    checkpoint = answer.get("checkpoint") or {}
    out.print(f"[bold]{image}[/]  [dim](checkpoint {checkpoint.get('path', '?')})[/]")
    table = Table("#", "Class", "Probability", "", box=None, header_style="bold",
                  pad_edge=False)
    for rank, p in enumerate(answer["predictions"][:top], start=1):
        table.add_row(str(rank), p["label"], f"{100 * p['probability']:6.2f}%",
                      _bar(p["probability"]), style="bold" if rank == 1 else "")
    out.print(table)


def predict(training_id: IdArg,
            images: Annotated[list[Path], typer.Argument(
                metavar="IMAGE...", help="JPEG, PNG, WebP, GIF or BMP images of any size.")],
            checkpoint: CheckpointOption = None,
            top: Annotated[int, typer.Option(
                min=1, help="How many classes to show per image, most likely first.")] = 10,
            as_json: JsonFlag = False,
            url: UrlOption = None, token: TokenOption = None) -> None:
    """Classify images with a Completed training's checkpoint (the 10 CIFAR-10 classes)."""
    for image in images:
        if not image.is_file():
            die(f"{image} is not a file")
    data = {"checkpoint": checkpoint} if checkpoint else {}
    answers: list[dict[str, Any]] = []
    with connect(url, token) as api:
        for image in images:
            with image.open("rb") as f, err.status(f"predicting {image} ..."):
                answer = api.request(
                    "POST", f"/api/v1/trainings/{training_id}/predict", data=data,
                    files={"file": (image.name, f, "application/octet-stream")},
                    timeout=SLOW_TIMEOUT).json()
            if as_json:
                answers.append({"file": str(image), **answer})
            else:
                _show_prediction(image, answer, top)
    if as_json:
        out.print_json(data=answers)


def publish(training_id: IdArg,
            name: Annotated[str, typer.Argument(
                help="The model's name: it becomes models/<you>/<name>/.")],
            checkpoint: CheckpointOption = None,
            description: Annotated[str, typer.Option(help="A line about it.")] = "",
            public: VisibilityFlag = None,
            url: UrlOption = None, token: TokenOption = None) -> None:
    """Publish a Completed training's checkpoint as a model other trainings can start from."""
    body: dict[str, Any] = {"name": name, "description": description}
    if public is not None:
        body["is_public"] = public
    if checkpoint:
        body["checkpoint"] = checkpoint
    with connect(url, token) as api:
        model = api.request("POST", f"/api/v1/trainings/{training_id}/publish", json=body,
                            timeout=SLOW_TIMEOUT).json()
    out.print(f"published training {training_id}'s checkpoint as model "
              f"{model['owner']}/{model['name']} ({fmt.size(model.get('size_bytes'))})")
    for f in model.get("files", []):
        out.print(f"use it in a config's inputs as: {model['input_url']}{f['path']}")


def register_ml(app: typer.Typer, *, panel: str) -> None:
    """Add evaluate, predict and publish to `app` under the help panel `panel`."""
    commands: list[tuple[str, Callable[..., None]]] = [
        ("evaluate", evaluate), ("predict", predict), ("publish", publish)]
    for name, command in commands:
        app.command(name, rich_help_panel=panel)(command)
