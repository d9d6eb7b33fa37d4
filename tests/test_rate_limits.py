"""Failed authentications are rate-limited per client address: live, on Redis, and fallback."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.auth.ratelimit import FailureLimiter
from app.errors import TooManyRequests
from tests.live import ADMIN_TOKEN, Live, free_port, start_live

LIMIT = 5


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """A platform allowing 5 failures a minute, with Secure cookies switched on."""
    platform = start_live(tmp_path_factory.mktemp("strict") / "data", workers=1, extra_env={
        "TRAINYARD_AUTH_FAILURE_LIMIT": f"{LIMIT}/minute", "TRAINYARD_COOKIE_SECURE": "true"})
    yield platform
    platform.stop()


def client_from(live: Live, address: str, token: str | None) -> httpx.Client:
    """A client whose connections come from `address` (any 127.x.y.z works on loopback)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=live.url, headers=headers, timeout=30,
                        transport=httpx.HTTPTransport(local_address=address))


def test_bad_tokens_then_429_while_other_clients_work(strict: Live) -> None:
    attacker = client_from(strict, "127.0.0.5", "ty_guessed-token")
    for _ in range(LIMIT):
        assert attacker.get("/api/v1/me").status_code == 401
    r = attacker.get("/api/v1/me")
    assert r.status_code == 429
    assert r.json()["error"] == "rate_limited" and "127.0.0.5" in r.json()["detail"]
    assert 1 <= int(r.headers["retry-after"]) <= 60
    # The address is blocked for any token: a 401/200 difference would leak a good guess.
    assert client_from(strict, "127.0.0.5", ADMIN_TOKEN).get("/api/v1/me").status_code == 429
    good = client_from(strict, "127.0.0.7", ADMIN_TOKEN).get("/api/v1/me")
    assert good.status_code == 200 and good.json()["username"] == "admin"
    log = strict.log.read_text()
    assert "auth failure: invalid Bearer token on GET /api/v1/me from 127.0.0.5" in log
    assert "auth rate limit: 127.0.0.5 refused" in log
    assert "rate-limit storage failed" not in log  # counted in the embedded Redis


def test_refused_token_management_is_no_authentication_failure(strict: Live) -> None:
    """A non-admin's 403s and an admin's 404s on users' tokens are not counted; only using a
    token an admin revoked is."""
    created = strict.admin.post("/api/v1/users", json={"username": "limited-user"}).json()
    user = client_from(strict, "127.0.0.9", created["token"])
    admin = client_from(strict, "127.0.0.9", ADMIN_TOKEN)
    for _ in range(LIMIT + 2):
        assert user.get("/api/v1/users/admin/tokens").status_code == 403
        assert admin.get("/api/v1/users/nobody-here/tokens").status_code == 404
    assert user.get("/api/v1/me").status_code == 200
    (row,) = admin.get("/api/v1/users/limited-user/tokens").json()
    assert admin.delete(f"/api/v1/users/limited-user/tokens/{row['id']}").status_code == 204
    for _ in range(LIMIT):
        assert user.get("/api/v1/me").status_code == 401
    assert admin.get("/api/v1/me").status_code == 429


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def test_failed_sign_ins_are_limited_and_cookies_secure(strict: Live) -> None:
    browser = client_from(strict, "127.0.0.6", None)
    form, cookie = _login_form(browser)
    assert "; secure" in form.headers["set-cookie"].lower()
    for _ in range(LIMIT):
        r = browser.post("/login", data={"token": "ty_wrong", "csrf_token": _csrf(form.text)},
                         headers=cookie)
        assert r.status_code == 401
    r = browser.post("/login", data={"token": ADMIN_TOKEN, "csrf_token": _csrf(form.text)},
                     headers=cookie)
    assert r.status_code == 429 and "try again in" in r.text
    assert int(r.headers["retry-after"]) >= 1

    other = client_from(strict, "127.0.0.8", None)
    form, cookie = _login_form(other)
    r = other.post("/login", data={"token": ADMIN_TOKEN, "csrf_token": _csrf(form.text)},
                   headers=cookie)
    assert r.status_code == 303
    assert "; secure" in r.headers["set-cookie"].lower()


def _login_form(client: httpx.Client) -> tuple[httpx.Response, dict[str, str]]:
    """The sign-in page and its session cookie as a header (a client keeps a Secure cookie
    to itself over plain HTTP, as a browser would; the test sends it by hand)."""
    page = client.get("/login")
    value = page.headers["set-cookie"].split(";", 1)[0]
    return page, {"Cookie": value}


def test_api_processes_share_counts_through_redis() -> None:
    """Two limiters on one Redis act as one: failures seen by one API process count in all."""
    url = "redis://127.0.0.1:6379/0"
    client = f"203.0.113.{uuid.uuid4().int % 250}-{uuid.uuid4().hex[:6]}"
    first, second = FailureLimiter("3/minute", url), FailureLimiter("3/minute", url)
    for _ in range(2):
        first.record_failure(client, what="test")
    second.record_failure(client, what="test")
    with pytest.raises(TooManyRequests) as refused:
        first.check(client)
    assert refused.value.retry_after_s >= 1
    FailureLimiter("3/minute", url).check("198.51.100.1-" + uuid.uuid4().hex)


def test_a_missing_redis_falls_back_to_counting_in_process() -> None:
    limiter = FailureLimiter("2/minute", f"redis://127.0.0.1:{free_port()}/0")
    limiter.record_failure("192.0.2.1", what="test")
    limiter.record_failure("192.0.2.1", what="test")
    with pytest.raises(TooManyRequests):
        limiter.check("192.0.2.1")
    limiter.check("192.0.2.2")


def test_memory_storage_without_redis(tmp_path: Path) -> None:
    limiter = FailureLimiter("1/minute", None)
    limiter.check("192.0.2.3")
    limiter.record_failure("192.0.2.3", what="test")
    with pytest.raises(TooManyRequests):
        limiter.check("192.0.2.3")
