"""The Workers page and a waiting training's place in its queue, in real Chromium."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from tests.browser import LAPTOP, PHONE, ConsoleWatch, screenshot
from tests.live import ADMIN_TOKEN, Live
from tests.repo_files import config, create_repo, submit
from tests.test_web import (  # noqa: F401  (fixtures)
    Visitor,
    assert_fits,
    in_chromium,
    shots,
    sign_in,
    visitor,
    wait_api_status,
)

pytestmark = [pytest.mark.browser, in_chromium]


def test_workers_page_for_users_and_admins(visitor: Visitor, browser: Browser,  # noqa: F811
                                           shots: Path) -> None:  # noqa: F811
    page = visitor.go("/workers")
    expect(page.get_by_role("heading", name="Workers and queues")).to_be_visible()
    row = page.get_by_role("row").filter(has_text="trainings.cpu")
    expect(row).to_contain_text("cpu.standard")
    expect(page.get_by_role("heading", name="Workers", exact=True)).to_have_count(0)
    phone = visitor.phone()
    phone.goto(f"{visitor.live.url}/workers")
    assert_fits(phone)

    admin = browser.new_context(viewport=LAPTOP)
    tab = admin.new_page()
    watch = ConsoleWatch()
    watch.attach(tab)
    sign_in(tab, visitor.live, ADMIN_TOKEN)
    tab.goto(f"{visitor.live.url}/workers")
    worker = tab.get_by_role("row").filter(has_text="trainyard-")
    expect(worker).to_contain_text("online")
    expect(worker).to_contain_text("trainings.cpu")
    screenshot(tab, shots, "workers-laptop")
    tab.set_viewport_size(PHONE)
    screenshot(tab, shots, "workers-phone")
    assert_fits(tab)
    admin.close()
    assert watch.errors == []


def test_a_waiting_training_shows_its_place_in_the_queue(visitor: Visitor,  # noqa: F811
                                                         shots: Path) -> None:  # noqa: F811
    live: Live = visitor.live
    busy = []
    for i in range(2):  # `trainyard up` in the tests runs two slots: fill both
        tid = submit(visitor.api, create_repo(visitor.api),
                     config(f"fill{i}", boot_file="sleep.py")).json()["id"]
        busy.append(tid)
    for tid in busy:
        wait_api_status(visitor, tid, {"Running"})
    queued = submit(visitor.api, create_repo(visitor.api), config("waits")).json()["id"]
    try:
        page = visitor.go(f"/trainings/{queued}")
        expect(page.locator("#waiting")).to_contain_text(
            "Position 1 of 1 in queue trainings.cpu")
        expect(page.locator("#waiting")).to_contain_text("1 online worker serves it")
        screenshot(page, shots, "training-waiting-laptop")
    finally:
        for tid in busy:
            visitor.api.post(f"/api/v1/trainings/{tid}/terminate")
    live.wait_status(visitor.api, queued, {"Completed"}, timeout=60)
