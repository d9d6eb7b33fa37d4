"""Sign-in sessions and API tokens through a live platform: logout, revocation, the list."""

from __future__ import annotations

import re

import httpx

from tests.live import Live

SESSION_COOKIE = "trainyard_session"


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def browser_sign_in(live: Live, token: str) -> httpx.Client:
    """A cookie-carrying client signed in through the login form."""
    browser = httpx.Client(base_url=live.url, timeout=30)
    page = browser.get("/login")
    r = browser.post("/login", data={"token": token, "next": "/",
                                     "csrf_token": _csrf(page.text)})
    assert r.status_code == 303 and r.headers["location"] == "/", r.text
    return browser


def test_a_cookie_replayed_after_logout_is_refused(any_live: Live) -> None:
    live = any_live
    user, api = live.new_user()
    token = api.headers["authorization"].split()[1]
    browser = browser_sign_in(live, token)
    cookie = browser.cookies[SESSION_COOKIE]
    assert browser.get("/api/v1/me").json()["username"] == user
    home = browser.get("/")
    assert home.status_code == 200
    r = browser.post("/logout", data={"csrf_token": _csrf(home.text)})
    assert r.status_code == 303 and r.headers["location"] == "/login"

    replay = httpx.Client(base_url=live.url, cookies={SESSION_COOKIE: cookie}, timeout=30)
    assert replay.get("/api/v1/me").status_code == 401
    r = replay.get("/")
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    # Another browser of the same user stays signed in: only the one session ended.
    other = browser_sign_in(live, token)
    assert other.get("/api/v1/me").status_code == 200


def test_cookie_flags(live: Live) -> None:
    _user, api = live.new_user()
    token = api.headers["authorization"].split()[1]
    browser = httpx.Client(base_url=live.url, timeout=30)
    page = browser.get("/login")
    r = browser.post("/login", data={"token": token, "csrf_token": _csrf(page.text)})
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    assert "secure" not in cookie  # plain HTTP on loopback: see test_secure_cookie_setting


def test_list_create_and_revoke_tokens(any_live: Live) -> None:
    live = any_live
    _user, api = live.new_user()
    listed = api.get("/api/v1/tokens").json()
    assert len(listed) == 1 and listed[0]["current"] is True
    assert "token" not in listed[0] and "token_hash" not in listed[0]
    first_secret = api.headers["authorization"].split()[1]
    assert first_secret.startswith(listed[0]["prefix"]) and len(listed[0]["prefix"]) == 10

    r = api.post("/api/v1/tokens", json={"name": "ci runner"})
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["name"] == "ci runner" and created["token"].startswith(created["prefix"])
    ci = live.client(created["token"])
    assert ci.get("/api/v1/me").status_code == 200
    names = [t["name"] for t in api.get("/api/v1/tokens").json()]
    assert names == ["default", "ci runner"]
    # The secret is never shown again.
    assert created["token"] not in api.get("/api/v1/tokens").text

    # A browser signed in with the CI token ends with it.
    browser = browser_sign_in(live, created["token"])
    assert browser.get("/api/v1/me").status_code == 200
    assert [t["name"] for t in browser.get("/api/v1/tokens").json() if t["current"]] == \
        ["ci runner"]
    assert api.delete(f"/api/v1/tokens/{created['id']}").status_code == 204
    assert ci.get("/api/v1/me").status_code == 401
    assert browser.get("/api/v1/me").status_code == 401
    assert api.get("/api/v1/me").status_code == 200

    # Nobody revokes another user's token; nobody revokes their last one.
    _other, other_api = live.new_user()
    mine = api.get("/api/v1/tokens").json()[0]["id"]
    assert other_api.delete(f"/api/v1/tokens/{mine}").status_code == 404
    r = api.delete(f"/api/v1/tokens/{mine}")
    assert r.status_code == 409 and r.json()["error"] == "last_token"
    assert api.post("/api/v1/tokens", json={"name": ""}).status_code == 422


def test_an_admin_lists_issues_and_revokes_any_users_tokens(any_live: Live) -> None:
    live = any_live
    user, api = live.new_user()
    laptop = api.post("/api/v1/tokens", json={"name": "laptop"}).json()
    browser = browser_sign_in(live, laptop["token"])
    base = f"/api/v1/users/{user}/tokens"

    listed = live.admin.get(base)
    assert listed.status_code == 200, listed.text
    rows = listed.json()
    assert [t["name"] for t in rows] == ["default", "laptop"]
    assert all("token" not in t and "token_hash" not in t and not t["current"] for t in rows)
    assert laptop["token"].startswith(rows[1]["prefix"]) and laptop["token"] not in listed.text
    assert [t["id"] for t in rows] == [t["id"] for t in api.get("/api/v1/tokens").json()]

    r = live.admin.post(base, json={"name": "issued by an admin"})
    assert r.status_code == 201, r.text
    issued = r.json()
    assert live.client(issued["token"]).get("/api/v1/me").json()["username"] == user
    assert "issued by an admin" in [t["name"] for t in api.get("/api/v1/tokens").json()]

    # Revoking the laptop token ends the browser signed in with it, and nothing else.
    assert live.admin.delete(f"{base}/{laptop['id']}").status_code == 204
    assert browser.get("/api/v1/me").status_code == 401
    assert api.get("/api/v1/me").status_code == 200
    assert live.admin.delete(f"{base}/{laptop['id']}").status_code == 404
    # A token id of someone else under this user's name is no token of theirs.
    admin_token_id = live.admin.get("/api/v1/tokens").json()[0]["id"]
    r = live.admin.delete(f"{base}/{admin_token_id}")
    assert r.status_code == 404 and f"has no token {admin_token_id}" in r.json()["detail"]

    # Unknown users are a 404; non-admins get a 403 even for their own name.
    for method, path in (("GET", "/api/v1/users/nobody-here/tokens"),
                         ("POST", "/api/v1/users/nobody-here/tokens"),
                         ("DELETE", "/api/v1/users/nobody-here/tokens/1")):
        r = live.admin.request(method, path, json={"name": "x"} if method == "POST" else None)
        assert r.status_code == 404 and "no user 'nobody-here'" in r.json()["detail"], r.text
    for method, path in (("GET", base), ("POST", base), ("DELETE", f"{base}/{issued['id']}"),
                         ("GET", "/api/v1/users/admin/tokens")):
        r = api.request(method, path, json={"name": "x"} if method == "POST" else None)
        assert r.status_code == 403 and r.json()["error"] == "forbidden", r.text

    # An admin may revoke a user's last token (the user is locked out until issued another);
    # their own last one stays protected, as on /api/v1/tokens.
    for row in live.admin.get(base).json():
        assert live.admin.delete(f"{base}/{row['id']}").status_code == 204
    assert live.admin.get(base).json() == []
    assert api.get("/api/v1/me").status_code == 401
    second = live.admin.post("/api/v1/users", json={"username": f"{user}-adm",
                                                    "is_admin": True}).json()
    other_admin = live.client(second["token"])
    (own,) = other_admin.get(f"/api/v1/users/{user}-adm/tokens").json()
    r = other_admin.delete(f"/api/v1/users/{user}-adm/tokens/{own['id']}")
    assert r.status_code == 409 and r.json()["error"] == "last_token"
