"""Training instances over REST: create, list, detail, terminate, delete, logs, outputs."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from sqlalchemy.exc import InvalidRequestError, SQLAlchemyError
from sqlalchemy.orm import Session
from sse_starlette.sse import EventSourceResponse

from app import byte_ranges, storage
from app.auth.deps import CurrentUser
from app.broker import publish_terminate
from app.config import get_settings
from app.db import Cleanup, SessionDep, get_sessionmaker, transaction
from app.errors import NotFound
from app.evaluations.manager import stop_detached_evaluations
from app.inference.service import stop_detached_predictors
from app.models import Training, TrainingStatus, User
from app.models.base import utcnow
from app.openapi import ERROR_REF
from app.params import DB_INT_MAX, TrainingId
from app.queue import send_run_training
from app.repos.service import get_repo, require_write
from app.trainings import outputs, service
from app.trainings.config import config_json_schema, parse_config_text
from app.trainings.config_rules import MAX_CONFIG_BYTES
from app.trainings.logs import SharedStatus, read_range, stream_events
from app.trainings.runtimes import list_flavors, list_runtimes
from app.trainings.schemas import CREATE_BODY, Accepted, OutputFile, TrainingPublic
from app.uploads import read_body
from app.workers import service as workers

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1", tags=["trainings"])

@router.get("/schemas/training-config", tags=["schemas"])
def training_config_schema() -> dict[str, Any]:
    """The JSON Schema of the config.json format."""
    return config_json_schema()


@router.get("/runtimes", tags=["schemas"])
def runtimes() -> dict[str, Any]:
    """The runtimes and instance types (flavors) this installation runs."""
    return {"runtimes": list_runtimes(), "flavors": list_flavors()}


def dispatch(db: Session, training: Training) -> None:
    """Queue a committed training; if the broker is down it waits in the outbox, with a note."""
    try:
        send_run_training(training.id, queue=training.queue)
    except Exception as exc:  # the broker being down must not fail the request: it is committed
        log.warning("could not queue training %s (%s); the reconciler sends it later",
                    training.id, exc)
        try:  # the outbox note: a transaction of its own, after the creation's commit
            with transaction(db):
                service.record_dispatch_failure(
                    db, training, f"Redis could not be reached at "
                    f"{utcnow():%Y-%m-%d %H:%M:%S} UTC ({exc})")
            db.refresh(training)
        except SQLAlchemyError:  # unrecorded, it is still re-sent: it is in no queue
            log.exception("could not record that training %s waits for the queue", training.id)


@router.post("/repos/{owner}/{name}/trainings", status_code=201, response_model=TrainingPublic,
             openapi_extra=CREATE_BODY)
async def create_training(owner: str, name: str, request: Request, db: SessionDep,
                          user: CurrentUser) -> TrainingPublic:
    """Create a training instance from a config object or `{"config_path": ...}`.

    The body may be pasted config.json text: comments and trailing commas are accepted.
    """
    raw = await read_body(request, max_bytes=MAX_CONFIG_BYTES)
    body = await run_in_threadpool(parse_config_text, raw, source="the request body")

    def create() -> Training:
        with transaction(db) as txn:
            repo = get_repo(db, owner=owner, name=name, user=user)
            training = service.create_training(db, repo=repo, user=user, body=body)
            txn.on_rollback(storage.training_dir(training.id))
        return training

    training = await run_in_threadpool(create)
    await run_in_threadpool(dispatch, db, training)
    return service.to_public(training)


@router.get("/repos/{owner}/{name}/trainings", response_model=list[TrainingPublic])
def list_trainings(owner: str, name: str, db: SessionDep,
                   user: CurrentUser) -> list[TrainingPublic]:
    """The repository's training instances, newest first."""
    repo = get_repo(db, owner=owner, name=name, user=user)
    return [service.to_public(t) for t in service.list_trainings(db, repo)]


@router.get("/trainings/{training_id}", response_model=TrainingPublic)
def get_training(training_id: TrainingId, db: SessionDep, user: CurrentUser) -> TrainingPublic:
    """A training's status, timestamps, duration, config and error; where it waits if Pending."""
    training = service.get_training(db, training_id, user=user)
    public = service.to_public(training)
    public.waiting = workers.waiting(db, training)
    return public


@router.post("/trainings/{training_id}/terminate", status_code=202, response_model=Accepted)
def terminate_training(training_id: TrainingId, db: SessionDep, user: CurrentUser) -> Accepted:
    """Stop a training: queued ones end at once, running ones go through Terminating."""
    training = service.get_training(db, training_id, user=user)
    with transaction(db):
        service.request_termination(db, training, user=user)
    if training.state is TrainingStatus.TERMINATING:
        publish_terminate(training.id)
    return Accepted(id=training.id, status=training.status)


@router.delete("/trainings/{training_id}", status_code=204)
async def delete_training(training_id: TrainingId, db: SessionDep, user: CurrentUser) -> Response:
    """Delete a training and its files; a running one is terminated first."""
    training = await run_in_threadpool(service.get_training, db, training_id, user=user)
    if not training.state.finished:
        await run_in_threadpool(_terminate, db, training, user)
        if training.state is TrainingStatus.TERMINATING:
            await run_in_threadpool(publish_terminate, training.id)
        deadline = get_settings().terminate_grace_s + 10
        waited = 0.0
        while not training.state.finished and waited < deadline:
            await asyncio.sleep(0.2)
            waited += 0.2
            if not await run_in_threadpool(_reload, db, training):
                raise NotFound(f"training {training_id} was deleted meanwhile")
    else:
        require_write(training.repo, user)
    cleanup = await run_in_threadpool(_delete, db, training)
    # The delete detached its services' rows (foreign keys set to NULL): stop them, then remove
    # the files, now that the row is gone for good.
    await stop_detached_predictors()
    await stop_detached_evaluations()
    await run_in_threadpool(cleanup.run)
    return Response(status_code=204)


def _reload(db: Session, training: Training) -> bool:
    """Refresh the row; False if it is gone (deleted by a concurrent request)."""
    try:
        db.refresh(training)
    except InvalidRequestError:
        return False
    return True


def _terminate(db: Session, training: Training, user: User) -> None:
    training_id = training.id  # read before a failed refresh expires it
    try:
        with transaction(db):
            service.request_termination(db, training, user=user)
    except InvalidRequestError as exc:  # its row was deleted by a concurrent request
        raise NotFound(f"training {training_id} was deleted meanwhile") from exc


def _delete(db: Session, training: Training) -> Cleanup:
    # One thread from the first write to the commit: never hold SQLite's lock across an await.
    with transaction(db):
        return service.delete_training(db, training)


@router.get("/trainings/{training_id}/log", response_class=Response,
            responses={200: {"content": {"text/plain": {}}}})
def get_log(training_id: TrainingId, db: SessionDep, user: CurrentUser,
            offset: int = Query(0, description="First byte; negative counts from the end."),
            limit: int = Query(1024 * 1024, ge=1, le=16 * 1024 * 1024)) -> Response:
    """The log as plain text from byte `offset` (at most `limit` bytes)."""
    training = service.get_training(db, training_id, user=user)
    data, start, size = read_range(storage.training_log(training.id), offset=offset,
                                   limit=limit)
    return Response(data, media_type="text/plain; charset=utf-8", headers={
        "X-Log-Start": str(start), "X-Log-Size": str(size),
        "X-Next-Offset": str(start + len(data)), "X-Training-Status": training.status})


def _read_status(training_id: int) -> str | None:
    with get_sessionmaker()() as db:
        return db.scalar(select(Training.status).where(Training.id == training_id))


_statuses = SharedStatus(_read_status)


@router.get("/trainings/{training_id}/log/stream")
async def stream_log(training_id: TrainingId, request: Request, user: CurrentUser,
                     offset: int = Query(0, ge=0, le=DB_INT_MAX)) -> EventSourceResponse:
    """Server-Sent Events following the log until the training ends (resume: Last-Event-ID)."""
    sessions = get_sessionmaker()

    def check_access() -> None:
        with sessions() as db:
            service.get_training(db, training_id, user=user)

    await run_in_threadpool(check_access)
    last_id = request.headers.get("last-event-id", "")
    start = min(int(last_id), DB_INT_MAX) if last_id.isascii() and last_id.isdigit() else offset

    async def get_status() -> str | None:
        return await _statuses.get(training_id)

    return EventSourceResponse(
        stream_events(storage.training_log(training_id), offset=start, get_status=get_status),
        ping=15, headers={"X-Accel-Buffering": "no"})


@router.get("/trainings/{training_id}/outputs", response_model=list[OutputFile])
def get_outputs(training_id: TrainingId, db: SessionDep, user: CurrentUser) -> list[OutputFile]:
    """Files the training wrote to its outputs (checkpoints flagged)."""
    return outputs.list_outputs(service.get_training(db, training_id, user=user))


_CONTENT_RANGE = {"description": "`bytes a-b/size` (206) or `bytes */size` (416)",
                  "schema": {"type": "string"}}
RangeHeader = Annotated[str | None, Header(
    alias="range", description="One byte range to resume a file download: `bytes=a-b`, "
    "`bytes=a-` or `bytes=-n` (206). Several ranges get the whole file (200).")]
IfRangeHeader = Annotated[str | None, Header(
    alias="if-range", description="The ETag or Last-Modified of the partial copy: the range "
    "is sent only if the file is still the same, else the whole file (200).")]


@router.get("/trainings/{training_id}/outputs/{path:path}", response_class=StreamingResponse,
            responses={200: {"content": {"application/octet-stream": {},
                                         "application/gzip": {}}},
                       206: {"description": "The requested byte range of a file",
                             "content": {"application/octet-stream": {}},
                             "headers": {"Content-Range": _CONTENT_RANGE}},
                       416: {"description": "The range starts past the end of the file",
                             "content": {"application/json": {"schema": ERROR_REF}},
                             "headers": {"Content-Range": _CONTENT_RANGE}}})
def download_output(training_id: TrainingId, path: str, db: SessionDep, user: CurrentUser,
                    range_header: RangeHeader = None,
                    if_range: IfRangeHeader = None) -> StreamingResponse:
    """Download one output file (resumable: `Range`), or a whole output folder as a streamed
    .tar.gz."""
    training = service.get_training(db, training_id, user=user)
    target = outputs.resolve_output(training, path)
    if target.fd is not None and target.info is not None:
        return byte_ranges.file_response(
            target.fd, target.info, media_type="application/octet-stream",
            headers={"Content-Disposition": _attachment(target.rel.name)},
            range_header=range_header, if_range=if_range)
    name = f"training-{training.id}-{target.rel.name}"
    return StreamingResponse(outputs.stream_tar_gz(training, target.rel, arcname=target.rel.name),
                             media_type="application/gzip",
                             headers={"Content-Disposition": _attachment(f"{name}.tar.gz")})


def _attachment(filename: str) -> str:
    return f"attachment; filename*=utf-8''{quote(filename)}"
