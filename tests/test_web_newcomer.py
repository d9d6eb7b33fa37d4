"""A newcomer's stumbles on the dashboard, fixed: each checked in real Chromium."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from app.units import format_bytes
from tests.browser import LAPTOP, ConsoleWatch, chromium_missing
from tests.live import Live, unique
from tests.repo_files import config, create_repo, submit, tar_gz
from tests.test_evaluations import REPO_FILES, wait_running

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(chromium_missing() is not None,
                                 reason=chromium_missing() or "")]
FINISHED = {"Completed", "Failed", "Terminated", "Timeout", "Abnormal"}


def token_of(client: httpx.Client) -> str:
    return str(client.headers["Authorization"]).split()[1]


def signed_in(browser: Browser, live: Live, client: httpx.Client, path: str
              ) -> tuple[Page, ConsoleWatch]:
    """A fresh tab, signed in through the login page, at `path`; console errors recorded."""
    page = browser.new_context(viewport=LAPTOP).new_page()
    watch = ConsoleWatch()
    watch.attach(page)
    page.goto(f"{live.url}/login?next={path}")
    page.fill("#token", token_of(client))
    page.click("button[type=submit]")
    page.wait_for_url(f"{live.url}{path}")
    return page, watch


def plain_training(live: Live, client: httpx.Client, repo: str, *, pause: float = 0,
                   wait: bool = True) -> int:
    """A one-epoch run of the evaluation tests' `plain.py` (loss and accuracy lines)."""
    r = submit(client, repo, config(unique("one"), boot_file="plain.py", hypeparameters=[
        {"name": "epochs", "value": "1"}, {"name": "pause", "value": str(pause)}]))
    assert r.status_code == 201, r.text
    if wait:
        assert live.wait_status(client, r.json()["id"], FINISHED)["status"] == "Completed"
    return int(r.json()["id"])


def test_the_report_url_keeps_its_query_through_the_sign_in(live: Live, browser: Browser
                                                            ) -> None:
    _, client = live.new_user("rep")
    tid = plain_training(live, client, create_repo(client, REPO_FILES))
    api = f"/api/v1/trainings/{tid}/evaluation"
    assert client.post(api, json={"type": "standard"}).status_code == 202
    report = wait_running(client, api)["report_url"]
    assert "?select=" in report

    anonymous = live.client(None).get(report, headers={"Accept": "text/html"})
    assert anonymous.status_code == 303
    location = urlsplit(anonymous.headers["location"])
    assert location.path == "/login" and parse_qs(location.query)["next"] == [report]

    page = browser.new_context(viewport=LAPTOP).new_page()
    page.goto(live.url + report)
    expect(page.locator("input[name=next]")).to_have_value(report)
    page.fill("#token", token_of(client))
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(re.escape(f"/trainings/{tid}/aim/metrics?select=")))
    page.context.close()


def test_a_running_page_asks_for_no_evaluation_and_one_epoch_charts_read_right(
        live: Live, browser: Browser) -> None:
    _, client = live.new_user("ep")
    repo = create_repo(client, REPO_FILES)
    tid = plain_training(live, client, repo, pause=2, wait=False)
    live.wait_status(client, tid, {"Running"})
    page, watch = signed_in(browser, live, client, f"/trainings/{tid}")
    assert page.locator("#evaluation-app").get_attribute("data-has-evaluation") == "false"
    expect(page.locator(".badge[data-status]").first).to_have_text("Completed", timeout=30_000)
    accuracy = page.locator("[data-role=accuracy-chart]")
    # One epoch: the point sits mid-axis, not on a 0-2 scale, and the legend says "epoch".
    expect(accuracy).to_have_attribute("data-x-range", "0.5..1.5", timeout=15_000)
    expect(accuracy.locator(".u-legend .u-series").first).to_contain_text("epoch")
    expect(page.locator("[data-role=loss-chart] .u-legend .u-series").first
           ).to_contain_text("step")
    page.context.close()
    assert watch.errors == []  # no 404 of GET .../evaluation, before or after Completed


def test_create_training_loads_a_chosen_config_file_first(live: Live, browser: Browser
                                                          ) -> None:
    _, client = live.new_user("cf")
    good = config("from-the-file", boot_file="plain.py")
    repo = create_repo(client, {**REPO_FILES, "train/config.json": json.dumps(good),
                                "train/one_problem.json": json.dumps(
                                    {**good, "job_name": "x"})})
    page, watch = signed_in(browser, live, client, f"/repos/{repo}/trainings/new")
    watch.allow(422, "/trainings")
    page.select_option("#config-file", "train/one_problem.json")
    page.get_by_role("button", name="Create training").click()
    banner = page.locator("#form-banner-title")
    expect(banner).to_have_text("The config has 1 problem; it is marked below.")
    expect(page.locator("#config-status")).to_contain_text("Loaded train/one_problem.json")
    page.select_option("#config-file", "train/config.json")
    page.get_by_role("button", name="Create training").click()
    page.wait_for_url(re.compile(r"/trainings/\d+$"))
    tid = int(page.url.rsplit("/", 1)[1])
    assert client.get(f"/api/v1/trainings/{tid}").json()["job_name"] == "from-the-file"
    page.context.close()
    assert watch.errors == [], watch.errors


def test_known_config_keys_come_from_the_served_schema(live: Live, browser: Browser) -> None:
    _, client = live.new_user("ks")
    cfg = {**config("keys-run", boot_file="plain.py"), "hyperparameters": [],
           "extra_key": 1}
    del cfg["hypeparameters"]
    repo = create_repo(client, {**REPO_FILES, "train/config.json": json.dumps(cfg)})
    page, watch = signed_in(browser, live, client, f"/repos/{repo}/trainings/new")
    served = set(client.get("/api/v1/schemas/training-config").json()["properties"])
    assert {"hyperparameters", "hypeparameters", "job_name"} <= served
    page.get_by_role("button", name="Load into form").click()
    status = page.locator("#config-status")
    expect(status).to_contain_text("Loaded train/config.json")
    expect(status).to_contain_text("were left out: extra_key.")
    page.context.close()
    assert watch.errors == []


def test_archive_uploads_name_their_field_and_a_left_out_folder(live: Live, browser: Browser,
                                                               tmp_path: Path) -> None:
    _, client = live.new_user("ar")
    page, watch = signed_in(browser, live, client, "/")
    watch.allow(422, "/repos/upload")
    bad = tmp_path / "notes.zip"
    bad.write_bytes(b"just text")
    page.get_by_label("Repository name", exact=True).nth(1).fill(unique("bad"))
    page.get_by_label("Archive (.zip or .tar.gz)").set_input_files(str(bad))
    page.get_by_role("button", name="Upload").click()
    error = page.locator("#upload-error")
    expect(error).to_be_visible()
    # The message sits in the archive's field, which is the one marked invalid.
    assert error.evaluate("e => e.closest('.field').querySelector('input').name") == "archive"
    expect(page.locator("#upload-archive")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#upload-name")).not_to_have_attribute("aria-invalid", "true")

    folder = tmp_path / "project.tar.gz"
    folder.write_bytes(tar_gz({"train.py": "print(1)\n", "README.md": "x" * 94_300}, root="proj"))
    name = unique("top")
    page.get_by_label("Repository name", exact=True).nth(1).fill(name)
    page.get_by_label("Archive (.zip or .tar.gz)").set_input_files(str(folder))
    page.get_by_role("button", name="Upload").click()
    page.wait_for_url(re.compile(f"/repos/[^/]+/{name}$"))
    expect(page.locator(".banner[role=status]").first).to_contain_text(
        "Its files all sat in one folder, proj/, which was left out")
    # Sizes: the page's server text, its script's, and the CLI's are one unit system.
    expect(page.locator("body")).to_contain_text(format_bytes(94_300))
    assert page.evaluate("async () => (await import('/static/js/common.js'))"
                         ".formatSize(94300000)") == format_bytes(94_300_000) == "94.3 MB"
    page.context.close()
    assert watch.errors == []
