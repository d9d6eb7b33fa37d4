"""The inference panel as a page of its own: `/trainings/{id}/predict`."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.db import SessionDep
from app.errors import AppError
from app.trainings.service import get_training
from app.web.rendering import render
from app.web.router import error_page, login_redirect
from app.web.session import session_user

page_router = APIRouter(include_in_schema=False)


@page_router.get("/trainings/{training_id}/predict")
def predict_page(training_id: int, request: Request, db: SessionDep) -> Response:
    """Upload or drop an image and see the training's class probabilities."""
    user = session_user(request, db)
    if user is None:
        return login_redirect(request)
    try:
        training = get_training(db, training_id, user=user)
    except AppError as exc:
        return error_page(request, user, exc)
    return render(request, "inference.html", {"training": training, "repo": training.repo},
                  user=user)
