"""Settings: the only place the environment is read."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of Trainyard, read from `TRAINYARD_*` environment variables."""

    model_config = SettingsConfigDict(env_prefix="TRAINYARD_", extra="ignore")

    data_dir: Path = Field(default=Path(".data"), description="Where the database, repos, "
                           "datasets, models and training files live.")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; SQLite in "
                                     "data_dir when unset.")
    redis_url: str | None = Field(default=None, description="Celery broker; an embedded Redis "
                                  "is started by `trainyard up` when unset.")
    admin_token: str | None = Field(default=None, description="API token of the bootstrap admin.")
    public_url: str | None = Field(default=None, description="Base URL printed and used in links.")

    training_timeout_s: int = Field(default=24 * 3600, ge=1, description="Wall-clock limit of a "
                                    "training; past it the run ends as Timeout.")
    max_trainings_per_repo: int = 5
    terminate_grace_s: float = Field(default=5.0, description="SIGTERM to SIGKILL delay.")
    error_tail_lines: int = 40

    heartbeat_s: float = Field(default=5.0, gt=0, description="How often a worker writes its "
                               "heartbeat row.")
    worker_lost_after_s: float = Field(default=30.0, gt=0, description="A worker whose "
                                       "heartbeat is older than this is lost: its trainings "
                                       "end Abnormal.")
    reconcile_every_s: float = Field(default=5.0, gt=0, description="Period of the reconciler "
                                     "loop (one active copy across all processes).")
    lease_ttl_s: float = Field(default=20.0, gt=0, description="The reconciler's lease lasts "
                               "this long unless renewed; another process takes over after it.")
    resend_after_s: float = Field(default=30.0, gt=0, description="A Pending training whose "
                                  "message is in no queue this long after it was sent is sent "
                                  "again.")
    stop_poll_s: float = Field(default=10.0, gt=0, description="A running training re-reads "
                               "its status this often (terminate arrives by pub/sub first).")
    control_pubsub: bool = Field(default=True, description="Deliver terminate requests to "
                                 "workers over Redis pub/sub (off: database polling only).")
    run_reconciler: bool = Field(default=True, description="Run a copy of the reconciler in "
                                 "this API or worker process (one copy is active at a time).")
    broker_timeout_s: float = Field(default=2.0, gt=0, description="Connect/read timeout of "
                                    "the API's sends to Redis, so an outage never blocks a "
                                    "request for long.")

    max_repo_bytes: int = 200 * 1024 * 1024
    max_repo_files: int = 5000
    max_dataset_bytes: int = 2 * 1024 * 1024 * 1024
    max_upload_file_bytes: int = 10 * 1024 * 1024

    evaluation_idle_s: int = Field(default=5 * 3600, description="Idle Aim UIs stop after this.")
    max_evaluations: int = Field(default=4, description="Concurrent Aim UI processes.")
    inference_idle_s: int = Field(default=30 * 60, description="Idle predictors stop after this.")
    max_predictors: int = 4

    session_secret: str | None = Field(default=None, description="Signs browser sessions; "
                                       "generated and kept in data_dir when unset.")

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL, defaulting to SQLite inside the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'trainyard.db').resolve()}"

    def path(self, *parts: str) -> Path:
        """A path inside the data dir (absolute)."""
        return self.data_dir.resolve().joinpath(*parts)


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (cached; tests call `get_settings.cache_clear()`)."""
    return Settings()
