"""The process layer: starting, sandboxing, supervising and stopping the processes of user code.

The worker (trainings) and the API (predictors, Aim UIs) both use it; it knows nothing of HTTP,
Celery or the database.
"""
