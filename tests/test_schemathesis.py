"""Schemathesis over every operation of /openapi.json on a live `trainyard up`.

A fixed seed and a few examples per operation, as the admin (so admin-only and authenticated
routes run past the token check): no response is a server error, and every response conforms
to the documented status codes, content types and schemas (the `Error` shape included).

The checks: no 5xx; status codes, content types, headers and bodies as documented; schema-
invalid requests refused; auth enforced (the same request without the token is a 401);
unsupported methods refused. Left out: `positive_data_acceptance` (a schema-valid request must
succeed).
Trainyard's rules go past JSON Schema (name patterns with their own messages, unique names,
files that must exist in the repository), so schema-valid requests rightly get 404/409/422.

Fixed inputs, and why:
- POST /api/v1/datasets/import (an admin's import from a server path or URL): the path is
  pointed at a folder that does not exist and the URL dropped, so a generated "/" never walks
  the whole disk and no download is attempted.
- Path parameters: in positive mode every other request names the real fixtures (the admin's
  repository and its Completed training) instead of generated ones, so routes run past their
  404; deletes always keep generated values, so they answer 404 and never remove the fixtures
  the other operations use. Training creation on the real repository stays in: generated
  configs are refused (422/409) or queue a short run of the fixture's boot files.
Nothing is excluded.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from tests.live import ADMIN_TOKEN, Live, start_live
from tests.repo_files import config, create_repo, submit

SEED = 20261205
EXAMPLES_PER_OPERATION = 8
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance, negative_data_rejection,
          missing_required_header, unsupported_method, ignored_auth]


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """A platform of its own, so generated requests never touch other tests' data."""
    platform = start_live(tmp_path_factory.mktemp("schemathesis") / "data", workers=1)
    yield platform
    platform.stop()


@pytest.fixture(scope="module")
def fixtures(fuzzed: Live) -> dict[str, Any]:
    """The admin's repository and a Completed training in it, named by real requests."""
    repo = create_repo(fuzzed.admin)
    tid = submit(fuzzed.admin, repo, config("fuzz-fixture")).json()["id"]
    assert fuzzed.wait_status(fuzzed.admin, tid, {"Completed", "Failed"})["status"] == "Completed"
    owner, name = repo.split("/")
    return {"owner": owner, "name": name, "training_id": tid}


class Inputs:
    """Fixed inputs applied to generated cases (see the module docstring)."""

    def __init__(self, real: dict[str, Any]) -> None:
        self.real = real
        self.count = 0
        self.named_fixtures = 0

    def apply(self, case: Any, mode: GenerationMode) -> None:
        """Point dangerous inputs elsewhere; name the real fixtures in every other case."""
        method, path = case.operation.method.upper(), case.operation.path
        if method == "POST" and path == "/api/v1/datasets/import" and isinstance(case.body,
                                                                                dict):
            case.body.pop("url", None)
            case.body["path"] = str(Path("/nonexistent-trainyard-import") / "data")
        self.count += 1
        if mode is GenerationMode.POSITIVE and method != "DELETE" and case.path_parameters \
                and self.count % 2:
            for key in set(case.path_parameters) & set(self.real):
                case.path_parameters[key] = self.real[key]
            self.named_fixtures += 1


def _fuzz(operation: Any, mode: GenerationMode, live: Live, inputs: Inputs,
          sent: list[str]) -> None:
    # Schemathesis' pytest plugin cannot resolve a fixture-made schema under this pytest, so the
    # operations are driven through its Python API: one Hypothesis run per operation and mode.
    @hypothesis.seed(SEED)
    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        inputs.apply(case, mode)
        sent.append(f"{case.method} {case.path}")
        case.call_and_validate(base_url=live.url, checks=CHECKS,
                               headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})

    run()


def test_every_operation_answers_within_its_schema(fuzzed: Live,
                                                  fixtures: dict[str, Any]) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzzed.url}/openapi.json")
    failures: list[str] = []
    sent: list[str] = []
    inputs = Inputs(fixtures)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 30
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _fuzz(operation, mode, fuzzed, inputs, sent)
            except Unsatisfiable:  # no parameter can be made invalid: nothing to send
                continue
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # every operation's failures, reported together
                failures.append(f"{operation.method.upper()} {operation.path} ({mode.value}): "
                                f"{exc}")
    print(f"schemathesis: {len(sent)} requests over {len(operations)} operations, "
          f"{inputs.named_fixtures} naming the real repository or training")
    assert not failures, "\n\n".join(failures)
    assert fuzzed.admin.get("/api/v1/health").status_code == 200
    assert len(sent) > 5 * len(operations), f"only {len(sent)} requests were generated"
    assert inputs.named_fixtures > 50
