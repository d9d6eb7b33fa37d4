"""Hostile request input gets a 4xx in the one error shape, never a 500."""

from __future__ import annotations

import pytest

from tests.live import Live

TRAINING_ROUTES = [
    ("GET", "/api/v1/trainings/{id}"), ("POST", "/api/v1/trainings/{id}/terminate"),
    ("DELETE", "/api/v1/trainings/{id}"), ("GET", "/api/v1/trainings/{id}/log"),
    ("GET", "/api/v1/trainings/{id}/log/stream"), ("GET", "/api/v1/trainings/{id}/outputs"),
    ("GET", "/api/v1/trainings/{id}/outputs/out/model.ckpt"),
    ("GET", "/api/v1/trainings/{id}/evaluation"), ("GET", "/api/v1/trainings/{id}/metrics"),
    ("GET", "/api/v1/trainings/{id}/inference"), ("POST", "/api/v1/trainings/{id}/publish"),
    ("GET", "/trainings/{id}/aim/"), ("GET", "/trainings/{id}/aim/api/runs/search/run"),
    ("GET", "/trainings/{id}"), ("GET", "/trainings/{id}/log.txt"),
]


@pytest.mark.parametrize("bad_id", [2**63, 2**64 + 5, 10**30, -1, 0])
def test_ids_outside_the_database_range_are_client_errors(live: Live, bad_id: int) -> None:
    _, client = live.new_user()
    for method, route in TRAINING_ROUTES:
        r = client.request(method, route.format(id=bad_id))
        assert r.status_code in (404, 422), (method, route, r.status_code, r.text)
        if r.status_code == 422:
            assert r.json()["fields"][0]["field"] == "path.training_id", r.text


def test_a_body_that_is_not_utf8_is_a_422(live: Live) -> None:
    _, client = live.new_user()
    headers = {"Content-Type": "application/json"}
    for route in ("/api/v1/repos", "/api/v1/datasets"):
        for body in (b'{"name": "caf\xe9"}', b"\xff\xfe\x00", b'{"name": "\xc3"}'):
            r = client.post(route, content=body, headers=headers)
            assert r.status_code == 422, (route, body, r.text)
            assert r.json()["error"] == "invalid" and "UTF-8" in r.json()["detail"]


def test_deep_or_huge_json_bodies_are_refused(live: Live) -> None:
    _, client = live.new_user()
    headers = {"Content-Type": "application/json"}
    r = client.post("/api/v1/repos", content=b"[" * 100_000, headers=headers)
    assert r.status_code == 422, r.text
    r = client.post("/api/v1/repos", content=b'{"name": "' + b"a" * (2 << 20) + b'"}',
                    headers=headers)
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    assert client.get("/api/v1/health").status_code == 200
