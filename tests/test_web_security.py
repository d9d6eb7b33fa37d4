"""Web security through a live platform and real Chromium: user bytes never run as our pages."""

from __future__ import annotations

import re
import time

import httpx
import pytest
from playwright.sync_api import Browser

from tests.browser import LAPTOP, chromium_missing
from tests.live import ADMIN_TOKEN, Live, unique
from tests.repo_files import config, create_repo, submit

in_chromium = pytest.mark.skipif(chromium_missing() is not None,
                                 reason=chromium_missing() or "")

# What the attacker's review used: read the dashboard's CSRF token, then create an admin.
EVIL_HTML = """<!doctype html><html><body><h1>Totally harmless</h1>
<script>
(async () => {
  const page = await (await fetch("/", {credentials: "same-origin"})).text();
  const token = /name="csrf-token" content="([^"]+)"/.exec(page)[1];
  await fetch("/api/v1/users", {method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": token},
    body: JSON.stringify({username: "%s"})});
  document.title = "pwned";
})();
</script></body></html>
"""
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64


def test_repository_files_are_plain_text_or_downloads(live: Live) -> None:
    _user, client = live.new_user()
    repo = create_repo(client, {"evil.html": EVIL_HTML % "nobody", "main.py": "print(1)\n",
                                "logo.png": PNG, "train/config.json": "{}\n"})
    for path in ("evil.html", "main.py", "train/config.json"):
        r = client.get(f"/api/v1/repos/{repo}/files/{path}")
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/plain; charset=utf-8", path
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["content-security-policy"].startswith("sandbox")
        assert not r.headers.get("content-disposition", "").startswith("attachment")
    r = client.get(f"/api/v1/repos/{repo}/files/logo.png")
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["content-disposition"].startswith("attachment")
    assert r.headers["content-security-policy"].startswith("sandbox")
    assert r.content == PNG
    # JSON answers of the API carry the same policy; nothing of ours may be framed elsewhere.
    r = client.get("/api/v1/repos")
    assert r.headers["content-security-policy"].startswith("sandbox")
    assert r.headers["x-frame-options"] == "SAMEORIGIN"


WRITE_HTML = """
import argparse, os
p = argparse.ArgumentParser()
p.add_argument("--output_url")
a, _ = p.parse_known_args()
open(os.path.join(a.output_url, "report.html"), "w").write("<script>alert(1)</script>")
print("<script>alert(2)</script>")
"""


def test_outputs_and_logs_are_downloads_or_sandboxed_text(live: Live) -> None:
    _user, client = live.new_user()
    repo = create_repo(client, {"README.md": "x\n", "code/main.py": WRITE_HTML})
    r = submit(client, repo, config("html-out"))
    assert r.status_code == 201, r.text
    done = live.wait_status(client, r.json()["id"], {"Completed", "Failed"})
    assert done["status"] == "Completed", done
    base = f"/api/v1/trainings/{done['id']}"
    out = client.get(f"{base}/outputs/out/report.html")
    assert out.status_code == 200 and out.headers["content-type"] == "application/octet-stream"
    assert out.headers["content-disposition"].startswith("attachment")
    assert out.headers["content-security-policy"].startswith("sandbox")
    assert out.headers["x-content-type-options"] == "nosniff"
    log = client.get(f"{base}/log")
    assert log.headers["content-type"] == "text/plain; charset=utf-8"
    assert log.headers["content-security-policy"].startswith("sandbox")
    browser = browser_client(live, client)
    page_log = browser.get(f"/trainings/{done['id']}/log.txt")
    assert "<script>alert(2)</script>" in page_log.text
    assert page_log.headers["content-type"] == "text/plain; charset=utf-8"
    assert page_log.headers["content-security-policy"].startswith("sandbox")
    assert page_log.headers["x-content-type-options"] == "nosniff"


def browser_client(live: Live, api: httpx.Client) -> httpx.Client:
    """A cookie session of the same user as `api`, signed in through the form."""
    browser = httpx.Client(base_url=live.url, timeout=30)
    page = browser.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf
    token = str(api.headers["authorization"]).split()[1]
    r = browser.post("/login", data={"token": token, "csrf_token": csrf.group(1)})
    assert r.status_code == 303
    return browser


def test_dashboard_pages_have_security_headers(live: Live) -> None:
    r = live.client(None).get("/login")
    assert r.status_code == 200
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'self'" in csp
    assert "sandbox" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "SAMEORIGIN"
    static = live.client(None).get("/static/js/common.js")
    assert static.headers["x-content-type-options"] == "nosniff"


@in_chromium
def test_an_html_file_opened_by_an_admin_runs_no_script(live: Live, browser: Browser) -> None:
    _user, client = live.new_user()
    victim_name = unique("planted")
    repo = create_repo(client, {"evil.html": EVIL_HTML % victim_name, "main.py": "print(1)\n"})
    context = browser.new_context(viewport=LAPTOP)
    page = context.new_page()
    try:
        page.goto(f"{live.url}/login")
        page.get_by_label("API token").fill(ADMIN_TOKEN)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{live.url}/")
        page.goto(f"{live.url}/repos/{repo}")
        # A click previews the file as text; the attack is opening the link itself.
        href = page.get_by_role("link", name="evil.html").get_attribute("href")
        assert href == f"/api/v1/repos/{repo}/files/evil.html"
        page.goto(live.url + href)
        # The browser shows the markup as text instead of running it.
        assert "<script>" in page.locator("body").inner_text()
        time.sleep(1.5)  # what the script would need to fetch twice on loopback
        assert page.title() != "pwned"
    finally:
        context.close()
    # Had the script run, its user would exist and this would be a 409.
    r = live.admin.post("/api/v1/users", json={"username": victim_name})
    assert r.status_code == 201, r.text
