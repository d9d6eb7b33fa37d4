"""Evaluations over REST: start and watch a training's or repository's Aim report; metrics."""

from __future__ import annotations

from fastapi import APIRouter, Body, Query, Response
from fastapi.concurrency import run_in_threadpool

from app.auth.deps import CurrentUser
from app.db import SessionDep
from app.evaluations import service
from app.evaluations.manager import get_manager
from app.evaluations.metrics import training_metrics
from app.evaluations.schemas import EvaluationCreate, EvaluationPublic, MetricsPublic
from app.evaluations.sources import Subject, repo_subject, training_subject
from app.params import TrainingId
from app.repos.service import get_repo
from app.trainings.service import get_training

router = APIRouter(prefix="/api/v1", tags=["evaluations"])


@router.post("/trainings/{training_id}/evaluation", status_code=202,
             response_model=EvaluationPublic)
async def start_evaluation(training_id: TrainingId, body: EvaluationCreate, db: SessionDep,
                           user: CurrentUser) -> EvaluationPublic:
    """Start (or reuse) the Aim report of a Completed training; poll GET until `running`."""
    def check() -> Subject:
        training = get_training(db, training_id, user=user)
        service.require_completed(training)
        return training_subject(training.id)

    subject = await run_in_threadpool(check)
    aim_path = body.aim_path.strip() if body.aim_path else None
    return await get_manager().request(subject, kind=body.type, aim_path=aim_path)


@router.get("/trainings/{training_id}/evaluation", response_model=EvaluationPublic)
async def get_evaluation(training_id: TrainingId, db: SessionDep,
                         user: CurrentUser) -> EvaluationPublic:
    """The evaluation's status (`starting`, `running`, `failed` with `error`, `expired`)."""
    training = await run_in_threadpool(get_training, db, training_id, user=user)
    return await get_manager().describe(training_subject(training.id))


@router.delete("/trainings/{training_id}/evaluation", status_code=204)
async def stop_evaluation(training_id: TrainingId, db: SessionDep, user: CurrentUser) -> Response:
    """Stop the training's Aim report now (it can be started again)."""
    training = await run_in_threadpool(get_training, db, training_id, user=user)
    await get_manager().stop_subject(training_subject(training.id))
    return Response(status_code=204)


@router.post("/repos/{owner}/{name}/evaluation", status_code=202,
             response_model=EvaluationPublic)
async def start_comparison(owner: str, name: str, db: SessionDep, user: CurrentUser,
                           _body: dict[str, object] | None = Body(None)) -> EvaluationPublic:
    """Compare every finished training of the repository in one Aim report (runs named by
    job_name, hyperparameters as params); rebuilt when a training was added."""
    def subject() -> Subject:
        return repo_subject(get_repo(db, owner=owner, name=name, user=user))

    found = await run_in_threadpool(subject)
    return await get_manager().request(found, kind="compare", aim_path=None)


@router.get("/repos/{owner}/{name}/evaluation", response_model=EvaluationPublic)
async def get_comparison(owner: str, name: str, db: SessionDep,
                         user: CurrentUser) -> EvaluationPublic:
    """The status of the repository's comparison report."""
    repo = await run_in_threadpool(get_repo, db, owner=owner, name=name, user=user)
    return await get_manager().describe(await run_in_threadpool(repo_subject, repo))


@router.get("/trainings/{training_id}/metrics", response_model=MetricsPublic)
def get_metrics(training_id: TrainingId, db: SessionDep, user: CurrentUser,
                max_points: int = Query(2000, ge=10, le=100_000,
                                        description="Points per series at most (evenly "
                                        "thinned, the last point kept).")) -> MetricsPublic:
    """The training's metric series (name, context, steps, values), also while it runs:
    from its Aim repository when it has one, else parsed from its log."""
    training = get_training(db, training_id, user=user)
    row = service.get_row(db, training_subject(training.id))
    aim_path = row.aim_path if row is not None and row.type == "custom" else None
    return training_metrics(training, aim_path=aim_path, max_points=max_points)
