"""The statuses of trainings, evaluations and service processes, and which of them are final:
the one definition.

The models store them, the worker and the reconciler move between them, the CLI colours them
and the pages read the final training statuses from `base.html` (`FINISHED`); nothing else
spells a status out. No imports beyond the standard library, so the CLI stays light.
"""

from __future__ import annotations

import enum


class TrainingStatus(enum.StrEnum):
    """Where a training instance is (Xihe's names)."""

    PENDING = "Pending"
    CREATING = "Creating"
    RUNNING = "Running"
    TERMINATING = "Terminating"
    COMPLETED = "Completed"
    FAILED = "Failed"
    TERMINATED = "Terminated"
    TIMEOUT = "Timeout"
    ABNORMAL = "Abnormal"

    @property
    def finished(self) -> bool:
        """True once the training can no longer change state."""
        return self in FINISHED


UNFINISHED = frozenset({TrainingStatus.PENDING, TrainingStatus.CREATING, TrainingStatus.RUNNING,
                        TrainingStatus.TERMINATING})
FINISHED = frozenset(TrainingStatus) - UNFINISHED


class EvaluationStatus(enum.StrEnum):
    """Where an evaluation's Aim UI is."""

    STARTING = "starting"
    RUNNING = "running"
    FAILED = "failed"
    EXPIRED = "expired"

    @property
    def finished(self) -> bool:
        """True once the Aim UI is gone for good (a new evaluation starts over)."""
        return self in EVALUATION_FINISHED


EVALUATION_ACTIVE = frozenset({EvaluationStatus.STARTING, EvaluationStatus.RUNNING})
EVALUATION_FINISHED = frozenset(EvaluationStatus) - EVALUATION_ACTIVE


class ServiceKind(enum.StrEnum):
    PREDICTOR = "predictor"
    AIM = "aim"


class ServiceState(enum.StrEnum):
    STARTING = "starting"  # claimed; pid and socket are set once the process is spawned
    READY = "ready"        # answering on its socket
    STOPPING = "stopping"  # asked to stop; the sweeper of its host signals it until it is gone
    FAILED = "failed"      # did not start; `error` says why (the next request tries again)


SERVICE_LIVE = frozenset({ServiceState.STARTING, ServiceState.READY})
