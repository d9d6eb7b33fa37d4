"""The dashboard in real Chromium against a live `trainyard up`: the seed workflow end to end."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import json5
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from app.statuses import FINISHED
from tests.browser import LAPTOP, PHONE, ConsoleWatch, chromium_missing, screenshot
from tests.live import ROOT, Live, unique
from tests.loss_monitor import LOSS_MONITOR_TRAIN
from tests.repo_files import BOOT_FILES, create_repo, submit, tar_gz
from tests.repo_files import config as tiny_config

in_chromium = pytest.mark.skipif(chromium_missing() is not None,
                                reason=chromium_missing() or "")

SAMPLE_CONFIG = ROOT / "samples" / "resnet50" / "train" / "config.json"
TRAINING_URL = re.compile(r"/trainings/\d+$")

# Xihe's format as users paste it: comments and a trailing comma.
TICKER_CONFIG = """{
  // ticks for a while, so the log can be watched and the run terminated
  "SDK": "ModelArts",
  "code_dir": "code/",
  "boot_file": "ticker.py",
  "outputs": [{"output_dir": "code/out/", "name": "output_url"}],
  "hypeparameters": [{"name": "ticks", "value": "600"}, {"name": "every", "value": "0.05"}],
  "frameworks": {"framework_type": "MPI",
                 "framework_version": "mindspore_1.3.0-cuda_10.1-py_3.7-ubuntu_1804-x86_64"},
  "train_instance_type": "modelarts.p3.large.public",
  "log_url": "train/log/",
  "env_variables": {"TICKER_MODE": "demo"},
  "job_description": "ticks every 50 ms",
  "inputs": [],
  "job_name": "ticker-run",
}
"""
REPO_FILES: dict[str, str | bytes] = {
    **BOOT_FILES,
    "train/config.json": TICKER_CONFIG,
    "train/broken.json": '{\n  "job_name": "broken"\n  "boot_file": "main.py"\n}\n',
    "code/chatty.py": "for i in range(30000):\n    print(f'line {i:05d} ' + 'x' * 60)\n",
}


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: $TRAINYARD_SCREENSHOTS, or a pytest temporary folder."""
    chosen = os.environ.get("TRAINYARD_SCREENSHOTS")
    return Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")


@dataclass
class Visitor:
    """A signed-in browser tab with its console watched, and the same user over REST."""

    live: Live
    context: BrowserContext
    page: Page
    watch: ConsoleWatch
    username: str
    api: httpx.Client

    def go(self, path: str) -> Page:
        self.page.goto(self.live.url + path)
        return self.page

    def phone(self) -> Page:
        """A phone-sized tab sharing this session."""
        assert self.context.browser is not None
        context = self.context.browser.new_context(
            viewport=PHONE, storage_state=self.context.storage_state(), is_mobile=True,
            has_touch=True, device_scale_factor=1)
        page = context.new_page()
        self.watch.attach(page)
        return page


def assert_fits(page: Page) -> None:
    """The page needs no sideways scrolling."""
    viewport = page.viewport_size
    assert viewport is not None
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= viewport["width"], f"{page.url} is {width}px wide"


def sign_in(page: Page, live: Live, token: str) -> None:
    page.goto(f"{live.url}/login")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live.url}/")


@pytest.fixture
def visitor(live: Live, browser: Browser) -> Iterator[Visitor]:
    """A fresh user signed in at laptop size; the test fails on any unexpected console error."""
    r = live.admin.post("/api/v1/users", json={"username": unique("web")})
    assert r.status_code == 201, r.text
    username, token = r.json()["username"], r.json()["token"]
    context = browser.new_context(viewport=LAPTOP)
    page = context.new_page()
    watch = ConsoleWatch()
    watch.attach(page)
    sign_in(page, live, token)
    yield Visitor(live, context, page, watch, username, live.client(token))
    context.close()
    assert watch.errors == []


def upload_repo(v: Visitor, name: str, folder: Path) -> str:
    """Create a repository through the upload form; returns owner/name."""
    archive = folder / f"{name}.tar.gz"
    archive.write_bytes(tar_gz(REPO_FILES))
    page = v.go("/")
    page.get_by_label("Repository name", exact=True).nth(1).fill(name)
    page.get_by_label("Archive (.zip or .tar.gz)").set_input_files(str(archive))
    page.get_by_role("button", name="Upload").click()
    page.wait_for_url(f"{v.live.url}/repos/{v.username}/{name}")
    return f"{v.username}/{name}"


def wait_api_status(v: Visitor, training_id: int, statuses: set[str]) -> None:
    v.live.wait_status(v.api, training_id, statuses, timeout=60)


def _form_token(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, html
    return match[1]


def test_sessions_and_csrf_over_plain_http(live: Live) -> None:
    name, api = live.new_user("web")
    token = api.headers["Authorization"].removeprefix("Bearer ")
    browser = httpx.Client(base_url=live.url, follow_redirects=False)
    page = browser.get("/login")
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    cookie = page.headers["set-cookie"].lower()
    assert "trainyard_session=" in cookie and "httponly" in cookie and "samesite=lax" in cookie
    assert "secure" not in cookie  # plain HTTP on localhost must keep working

    forged = browser.post("/login", data={"token": token, "csrf_token": "forged"})
    assert forged.status_code == 403 and "session expired" in forged.text
    signed = browser.post("/login", data={"token": token, "next": "//evil.example/",
                                          "csrf_token": _form_token(page.text)})
    assert signed.status_code == 303 and signed.headers["location"] == "/"
    home = browser.get("/")
    assert home.status_code == 200 and name in home.text
    csrf = re.search(r'<meta name="csrf-token" content="([^"]+)"', home.text)
    assert csrf

    # The session cookie authenticates the API, but unsafe calls need the page's token.
    no_token = browser.post("/api/v1/repos", json={"name": "via-cookie"})
    assert no_token.status_code == 403 and no_token.json()["error"] == "csrf_failed"
    wrong = browser.post("/api/v1/repos", json={"name": "via-cookie"},
                         headers={"X-CSRF-Token": "x" + csrf[1]})
    assert wrong.status_code == 403
    made = browser.post("/api/v1/repos", json={"name": "via-cookie"},
                        headers={"X-CSRF-Token": csrf[1]})
    assert made.status_code == 201, made.text
    assert browser.get("/api/v1/repos").status_code == 200  # reads need no token
    # Bearer calls are unchanged: no CSRF token, with or without a cookie alongside.
    assert api.post("/api/v1/repos", json={"name": "via-bearer"}).status_code == 201
    both = browser.post("/api/v1/repos", json={"name": "via-both"},
                        headers={"Authorization": f"Bearer {token}"})
    assert both.status_code == 201

    fork = browser.post("/repos/fork", data={"name": "forged-fork", "csrf_token": "nope"})
    assert fork.status_code == 403 and "forged-fork" not in api.get("/api/v1/repos").text
    out = browser.post("/logout", data={"csrf_token": _form_token(home.text)})
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert browser.get("/").status_code == 303
    assert browser.post("/api/v1/repos", json={"name": "after-logout"},
                        headers={"X-CSRF-Token": csrf[1]}).status_code == 401


@pytest.mark.browser
@in_chromium
def test_pages_give_their_scripts_the_one_set_of_final_statuses(live: Live) -> None:
    page = httpx.get(f"{live.url}/login")
    meta = re.search(r'<meta name="finished-statuses" content="([^"]*)"', page.text)
    assert meta and set(meta[1].split()) == set(FINISHED), page.text[:800]
    common = (ROOT / "frontend" / "static" / "js" / "common.js").read_text()
    assert 'meta[name="finished-statuses"]' in common
    for status in FINISHED:  # no second copy of the set in the scripts
        for script in (ROOT / "frontend" / "static" / "js").glob("*.js"):
            assert f'"{status}", "' not in script.read_text(), script.name


def test_sign_in_sign_out_and_csrf(live: Live, browser: Browser, shots: Path) -> None:
    context = browser.new_context(viewport=LAPTOP)
    page = context.new_page()
    watch = ConsoleWatch()
    watch.attach(page)
    watch.allow(401, "/login")
    page.goto(f"{live.url}/repos/nobody/none")
    expect(page).to_have_url(re.compile(r"/login\?next=/repos/nobody/none$"))
    screenshot(page, shots, "login-laptop")
    page.get_by_label("API token").fill("ty_not-a-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("That token is not valid")
    expect(page.get_by_label("API token")).to_have_attribute("aria-invalid", "true")

    name, client = live.new_user("web")
    token = client.headers["Authorization"].removeprefix("Bearer ")
    page.get_by_label("API token").fill(token)
    watch.allow(404, "/repos/nobody/none")
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/repos/nobody/none$"))  # back where it was going
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()

    # A cookie-authenticated unsafe API call needs the page's CSRF token; GETs do not.
    probe = """async ([withToken]) => {
        const headers = {"Content-Type": "application/json"};
        if (withToken) headers["X-CSRF-Token"] =
            document.querySelector('meta[name="csrf-token"]').content;
        const r = await fetch("/api/v1/repos", {method: "POST", headers,
            body: JSON.stringify({name: "csrf-probe-" + withToken, template: "resnet50"})});
        return [r.status, (await r.json()).error || null];
    }"""
    watch.allow(403, "/api/v1/repos")
    assert page.evaluate(probe, [False]) == [403, "csrf_failed"]
    assert page.evaluate(probe, [True]) == [201, None]
    assert page.evaluate("fetch('/api/v1/me').then(r => r.json())")["username"] == name

    page.goto(f"{live.url}/")
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{live.url}/login")
    page.goto(f"{live.url}/")
    expect(page).to_have_url(re.compile(r"/login\?next=/$"))
    context.close()
    assert watch.errors == []


@pytest.mark.browser
@in_chromium
def test_fork_the_sample_and_load_its_config(visitor: Visitor, shots: Path) -> None:
    v, page = visitor, visitor.page
    screenshot(page, shots, "repos-empty-laptop")
    expect(page.get_by_text("No repositories yet")).to_be_visible()
    page.get_by_label("Repository name", exact=True).first.fill("resnet50")
    page.get_by_role("button", name="Fork sample").click()
    page.wait_for_url(f"{v.live.url}/repos/{v.username}/resnet50")
    expect(page.get_by_role("status").first).to_contain_text("Forked the ResNet50 sample")
    expect(page.get_by_text("No trainings yet")).to_be_visible()

    files = page.locator("#file-list a")
    expect(files.first).to_be_visible()
    sample_files = sorted(p.relative_to(SAMPLE_CONFIG.parents[1]).as_posix()
                          for p in SAMPLE_CONFIG.parents[1].rglob("*")
                          if p.is_file() and "__pycache__" not in p.parts)
    assert sorted(files.evaluate_all("els => els.map(e => e.dataset.path)")) == sample_files
    page.locator('#file-list a[data-path$="resnet.py"]').click()
    expect(page.locator("#viewer")).to_contain_text("def ")
    screenshot(page, shots, "repo-empty-laptop")

    # Duplicate names are refused with the reason next to the field.
    page.goto(f"{v.live.url}/")
    page.get_by_label("Repository name", exact=True).first.fill("resnet50")
    v.watch.allow(409, "/repos/fork")
    page.get_by_role("button", name="Fork sample").click()
    expect(page.locator("#fork-error")).to_contain_text("already exists")
    screenshot(page, shots, "repos-fork-error-laptop")

    sample = json5.loads(SAMPLE_CONFIG.read_text())
    page = v.go(f"/repos/{v.username}/resnet50/trainings/new")
    expect(page.locator("#config-file")).to_have_value("train/config.json")
    page.get_by_role("button", name="Load into form").click()
    expect(page.locator("#config-status")).to_contain_text("Loaded train/config.json")
    expect(page.get_by_label("Job name")).to_have_value(sample["job_name"])
    expect(page.get_by_label("Boot file (boot_file)")).to_have_value(sample["boot_file"])
    screenshot(page, shots, "new-training-sample-laptop")
    if not sample.get("inputs"):
        return
    # An input naming a dataset that does not exist: the 422 lands next to that input.
    url_inputs = page.locator('[data-rows="inputs"] input[data-key="input_url"]')
    expect(url_inputs).to_have_count(len(sample["inputs"]))
    url_inputs.last.fill("datasets/nobody/missing/")
    v.watch.allow(422, "/trainings")
    page.get_by_role("button", name="Create training").click()
    expect(page.locator("#form-banner")).to_contain_text("problem")
    expect(url_inputs.last).to_have_attribute("aria-invalid", "true")
    row_error = page.locator('[data-rows="inputs"] [data-row]').last.locator(".field-error").last
    expect(row_error).to_contain_text("datasets/nobody/missing does not exist")
    screenshot(page, shots, "new-training-errors-laptop")


@pytest.mark.browser
@in_chromium
def test_create_from_config_file_follow_the_log_and_terminate(visitor: Visitor, shots: Path,
                                                              tmp_path: Path) -> None:
    v = visitor
    repo = upload_repo(v, "ticker", tmp_path)
    page = v.page
    expect(page.get_by_text("Created " + repo)).to_be_visible()
    page.get_by_role("link", name="Create training").first.click()
    page.wait_for_url(f"{v.live.url}/repos/{repo}/trainings/new")
    options = page.locator("#config-file option")
    expect(options).to_have_text(["train/config.json", "train/broken.json", "Other path…"])
    status = page.locator("#config-status")
    page.get_by_label("Config file", exact=True).select_option("train/broken.json")
    page.get_by_role("button", name="Load into form").click()
    expect(status).to_contain_text("train/broken.json is not valid JSON: line 3, column 3")
    page.get_by_label("Config file", exact=True).select_option("")
    page.get_by_label("Path in the repository").fill("train/missing.json")
    v.watch.allow(404, "/files/train/missing.json")
    page.get_by_role("button", name="Load into form").click()
    expect(status).to_contain_text(f"{repo} has no file train/missing.json")
    page.get_by_label("Config file", exact=True).select_option("train/config.json")
    expect(page.get_by_label("Path in the repository")).to_be_hidden()
    page.get_by_role("button", name="Load into form").click()
    expect(page.get_by_label("Job name")).to_have_value("ticker-run")
    expect(page.locator('[data-rows="hypeparameters"] [data-row]')).to_have_count(2)
    expect(page.locator('[data-rows="env_variables"] input[data-key="name"]')).to_have_value(
        "TICKER_MODE")
    screenshot(page, shots, "new-training-laptop", full_page=False)
    page.get_by_role("button", name="Create training").click()
    page.wait_for_url(TRAINING_URL)
    training_id = int(page.url.rsplit("/", 1)[1])

    log = page.locator("#log-text")
    expect(log).to_contain_text("tick 20 ", timeout=30_000)
    expect(page.locator("#status .badge")).to_have_attribute("data-status", "Running")
    expect(page.locator("#log-state")).to_have_text("Following")
    page.get_by_role("button", name="Pause").click()
    paused_text = log.inner_text()
    time.sleep(0.5)
    assert log.inner_text() == paused_text  # nothing is appended while paused
    expect(page.locator("#log-lines")).to_contain_text("new while paused")
    page.get_by_role("button", name="Resume").click()
    expect(page.locator("#log-state")).to_have_text("Following")
    assert len(log.inner_text()) > len(paused_text)
    screenshot(page, shots, "training-running-laptop", full_page=False)
    phone = v.phone()
    phone.goto(page.url)
    expect(phone.locator("#log-text")).to_contain_text("tick")
    screenshot(phone, shots, "training-running-phone", full_page=False)
    assert_fits(phone)

    # The repository page shows it live, and the rule blocks a second one.
    phone.goto(f"{v.live.url}/repos/{repo}")
    row = phone.locator(f'tr[data-training-id="{training_id}"]')
    expect(row.locator(".badge")).to_have_attribute("data-status", "Running")
    create = phone.locator("#create-training")
    expect(create).to_have_attribute("aria-disabled", "true")
    expect(phone.locator("#create-reason")).to_contain_text("A training is already running")
    screenshot(phone, shots, "repo-phone")
    assert_fits(phone)

    page.get_by_role("button", name="Terminate").click()
    dialog = page.locator("#confirm-terminate")
    expect(dialog).to_be_visible()
    screenshot(page, shots, "terminate-dialog-laptop", full_page=False)
    dialog.get_by_role("button", name="Terminate").click()
    expect(page.locator("#status .badge")).to_have_attribute("data-status", "Terminated",
                                                             timeout=20_000)
    expect(page.locator("#log-state")).to_have_text("Finished")
    expect(page.get_by_role("button", name="Terminate")).to_have_count(0)

    # Without a reload, the repository page follows: status, duration, and the rule lifts.
    expect(row.locator(".badge")).to_have_attribute("data-status", "Terminated",
                                                    timeout=10_000)
    expect(create).not_to_have_attribute("aria-disabled", "true")
    expect(phone.locator("#create-reason")).to_be_hidden()
    assert re.fullmatch(r"\d+(\.\d)?s|\d+m \d\ds", row.locator('[data-cell="duration"]')
                        .inner_text())
    phone.context.close()


@pytest.mark.browser
@in_chromium
def test_create_from_the_form_with_field_errors(visitor: Visitor, shots: Path) -> None:
    v = visitor
    repo = create_repo(v.api, REPO_FILES)
    page = v.go(f"/repos/{repo}/trainings/new")
    page.get_by_label("Fill in the form").check()
    expect(page.locator("#file-panel")).to_be_hidden()
    page.get_by_label("Job name").fill("ab")
    page.get_by_label("Code folder (code_dir)").fill("code/")
    page.get_by_label("Boot file (boot_file)").fill("main.py")
    page.get_by_role("button", name="Add hyperparameter").click()
    page.get_by_role("button", name="Add hyperparameter").click()
    names = page.locator('[data-rows="hypeparameters"] input[data-key="name"]')
    values = page.locator('[data-rows="hypeparameters"] input[data-key="value"]')
    names.nth(0).fill("epochs")
    values.nth(0).fill("3")
    names.nth(1).fill("note")
    values.nth(1).fill("x" * 41)
    page.get_by_role("button", name="Add output").click()
    page.locator('[data-rows="outputs"] input[data-key="name"]').fill("output_url")
    page.locator('[data-rows="outputs"] input[data-key="output_dir"]').fill("code/out/")
    expect(page.locator("#json-preview")).to_contain_text('"boot_file": "main.py"')

    v.watch.allow(422, "/trainings")
    page.get_by_role("button", name="Create training").click()
    expect(page.get_by_label("Job name")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#f-job_name-error")).to_contain_text("5-50 characters")
    expect(values.nth(1)).to_have_attribute("aria-invalid", "true")
    expect(page.locator('[data-rows="hypeparameters"] [data-row]').nth(1)
           .locator(".field-error").last).to_contain_text("at most 40 characters")
    expect(values.nth(0)).not_to_have_attribute("aria-invalid", "true")
    screenshot(page, shots, "new-training-errors-laptop")
    phone = v.phone()
    phone.goto(page.url)
    screenshot(phone, shots, "new-training-phone")
    assert_fits(phone)
    phone.context.close()

    page.get_by_label("Job name").fill("form-run")
    page.locator('[data-rows="hypeparameters"] [data-row]').nth(1).get_by_role(
        "button", name="Remove this hyperparameter").click()
    # An input naming a dataset that does not exist: the 422 lands next to that input.
    page.get_by_role("button", name="Add input").click()
    page.locator('[data-rows="inputs"] input[data-key="name"]').fill("data_url")
    input_url = page.locator('[data-rows="inputs"] input[data-key="input_url"]')
    input_url.fill("datasets/nobody/missing/")
    page.get_by_role("button", name="Create training").click()
    expect(input_url).to_have_attribute("aria-invalid", "true")
    expect(page.locator('[data-rows="inputs"] .field-error').last).to_contain_text(
        "datasets/nobody/missing does not exist")
    expect(page.get_by_label("Job name")).not_to_have_attribute("aria-invalid", "true")
    page.get_by_role("button", name="Remove this input").click()
    expect(page.locator('[data-rows-empty="inputs"]')).to_have_text("No inputs.")
    page.get_by_role("button", name="Create training").click()
    page.wait_for_url(TRAINING_URL)
    expect(page.locator("#status .badge")).to_have_attribute("data-status", "Completed",
                                                             timeout=30_000)
    expect(page.locator("#log-text")).to_contain_text("epoch 3/3")
    outputs = page.locator("#outputs")
    ckpt = outputs.locator("tr", has_text="code/out/model.ckpt")
    expect(ckpt.locator(".badge--checkpoint")).to_be_visible()
    link = ckpt.get_by_role("link", name="Download code/out/model.ckpt")
    with page.expect_download() as download:
        link.click()
    assert Path(download.value.path()).read_bytes() == b"weights" * 100
    expect(page.locator("#config-json")).to_contain_text('"value": "3"')
    page.reload()  # the server's own rendering of a finished training
    expect(page.locator("#log-text")).to_contain_text("epoch 3/3")
    expect(page.locator("#log-state")).to_have_text("Finished")
    screenshot(page, shots, "training-completed-laptop")
    phone = v.phone()
    phone.goto(page.url)
    screenshot(phone, shots, "training-completed-phone")
    assert_fits(phone)
    phone.context.close()

    for section in ("evaluation", "inference"):
        slot = page.locator(f"section#{section}")
        expect(slot).to_have_attribute("data-training-id", page.url.rsplit("/", 1)[1])
        expect(slot).to_have_attribute("data-status", "Completed")


@pytest.mark.browser
@in_chromium
def test_rules_disable_creation_and_show_the_409(visitor: Visitor, shots: Path) -> None:
    v = visitor
    repo = create_repo(v.api, REPO_FILES)
    page = v.go(f"/repos/{repo}/trainings/new")
    page.get_by_role("button", name="Load into form").click()
    expect(page.get_by_label("Job name")).to_have_value("ticker-run")
    create = page.get_by_role("button", name="Create training")
    expect(create).to_be_enabled()

    # Another client starts a training while the form is open: the 409 comes back.
    sleeping = submit(v.api, repo, tiny_config("sleeper", boot_file="sleep.py")).json()["id"]
    v.watch.allow(409, "/trainings")
    create.click()
    expect(page.locator("#form-banner")).to_contain_text("runs one training at a time")
    expect(create).to_be_disabled()
    expect(page.locator("#rule-banner")).to_contain_text("A training is already running")
    screenshot(page, shots, "new-training-409-laptop", full_page=False)

    assert v.api.post(f"/api/v1/trainings/{sleeping}/terminate").status_code == 202
    wait_api_status(v, sleeping, FINISHED)
    for i in range(4):
        tid = submit(v.api, repo, tiny_config(f"quick-{i}", boot_file="main.py",
                                              hypeparameters=[])).json()["id"]
        wait_api_status(v, tid, FINISHED)

    page = v.go(f"/repos/{repo}")
    expect(page.locator("#training-count")).to_have_text("5 of 5 instances")
    expect(page.locator("#create-training")).to_have_attribute("aria-disabled", "true")
    expect(page.locator("#create-reason")).to_contain_text(
        "A repository can have at most 5 training instances")
    expect(page.locator("#trainings tbody tr")).to_have_count(5)
    screenshot(page, shots, "repo-laptop")
    page = v.go(f"/repos/{repo}/trainings/new")
    expect(page.get_by_role("button", name="Create training")).to_be_disabled()
    expect(page.locator("#rule-banner")).to_contain_text(
        "A repository can have at most 5 training instances")

    # Deleting one (with confirmation) makes room again.
    page = v.go(f"/trainings/{sleeping}")
    page.get_by_role("button", name="Delete").click()
    page.locator("#confirm-delete").get_by_role("button", name="Delete").click()
    page.wait_for_url(f"{v.live.url}/repos/{repo}")
    expect(page.locator("#training-count")).to_have_text("4 of 5 instances")
    expect(page.locator("#create-training")).not_to_have_attribute("aria-disabled", "true")


@pytest.mark.browser
@in_chromium
def test_a_large_log_stays_fast_and_loads_earlier_lines(visitor: Visitor) -> None:
    v = visitor
    repo = create_repo(v.api, REPO_FILES)
    tid = submit(v.api, repo, tiny_config("chatty-run", boot_file="chatty.py",
                                          hypeparameters=[])).json()["id"]
    page = v.go(f"/trainings/{tid}")
    log = page.locator("#log-text")
    expect(log).to_contain_text("line 29999", timeout=30_000)
    wait_api_status(v, tid, FINISHED)
    started = time.monotonic()
    page.reload()
    expect(log).to_contain_text("line 29999")
    print(f"30,000-line log: end shown {time.monotonic() - started:.2f} s after a reload")
    assert time.monotonic() - started < 5
    lines = log.inner_text().count("\n")
    assert 4000 <= lines <= 5600, lines
    expect(page.locator("#log-lines")).to_contain_text("earlier not loaded")
    first = int(re.search(r"line (\d+)", log.inner_text())[1])  # type: ignore[index]
    page.get_by_role("button", name="Load earlier lines").click()
    expect(log).to_contain_text(f"line {first - 1:05d} ")
    earlier = int(re.search(r"line (\d+)", log.inner_text())[1])  # type: ignore[index]
    assert earlier < first
    text = log.inner_text()
    numbers = [int(n) for n in re.findall(r"^line (\d+)", text, re.MULTILINE)]
    assert numbers == list(range(numbers[0], 30000))  # no line lost or doubled at the seams
    expect(page.get_by_role("link", name="Download")).to_have_attribute(
        "href", f"/trainings/{tid}/log.txt")


@pytest.mark.browser
@in_chromium
def test_repositories_page_at_laptop_and_phone_width(visitor: Visitor, shots: Path) -> None:
    v = visitor
    busy = create_repo(v.api, REPO_FILES)
    create_repo(v.api, REPO_FILES)
    sleeper = submit(v.api, busy, tiny_config("sleeper", boot_file="sleep.py")).json()["id"]
    page = v.go("/")
    expect(page.locator("tbody tr")).to_have_count(2)
    running = page.get_by_role("link", name="A training is running")
    expect(running).to_have_attribute("href", f"/trainings/{sleeper}")
    screenshot(page, shots, "repos-laptop", full_page=False)
    phone = v.phone()
    phone.goto(f"{v.live.url}/")
    expect(phone.locator("tbody tr")).to_have_count(2)
    screenshot(phone, shots, "repos-phone")
    assert_fits(phone)
    phone.context.close()
    assert v.api.post(f"/api/v1/trainings/{sleeper}/terminate").status_code == 202


@pytest.mark.browser
@in_chromium
def test_compare_the_finished_trainings_of_a_repository(visitor: Visitor, shots: Path) -> None:
    v = visitor
    repo = create_repo(v.api, {"README.md": "compare", "code/losses.py": LOSS_MONITOR_TRAIN})
    page = v.go(f"/repos/{repo}")
    button = page.get_by_role("button", name="Compare trainings")
    expect(button).to_be_disabled()
    for i, lr in enumerate(("0.001", "0.01")):
        cfg = tiny_config(f"lr-run-{i}", boot_file="losses.py",
                          hypeparameters=[{"name": "lr", "value": lr}])
        tid = submit(v.api, repo, cfg).json()["id"]
        v.live.wait_status(v.api, tid, {"Completed"}, timeout=60)
    expect(button).to_be_enabled()  # the list poll saw the trainings finish

    button.click()
    expect(page.get_by_role("button", name="Comparing…")).to_be_disabled()
    view = page.get_by_role("link", name="View comparison")
    expect(view).to_be_visible(timeout=90_000)
    expect(view).to_have_attribute("target", "_blank")
    expect(page.locator("#compare-error")).to_be_hidden()
    href = view.get_attribute("href")
    assert href and href.startswith(f"/repos/{repo}/aim/"), href
    screenshot(page, shots, "repo-compare-laptop", full_page=False)
    report = v.context.request.get(v.live.url + href)
    assert report.status == 200, report.text()[:500]
    assert httpx.get(v.live.url + href).status_code == 401  # not without the session

    # Trainings that printed no metrics: the 409 is shown and the button is usable again.
    quiet = create_repo(v.api, BOOT_FILES)
    tid = submit(v.api, quiet, tiny_config("quiet-run", hypeparameters=[])).json()["id"]
    v.live.wait_status(v.api, tid, {"Completed"}, timeout=60)
    v.watch.allow(409, "/evaluation")
    page = v.go(f"/repos/{quiet}")
    page.get_by_role("button", name="Compare trainings").click()
    expect(page.locator("#compare-error")).to_contain_text("has no finished training with metrics")
    expect(page.get_by_role("button", name="Compare trainings")).to_be_enabled()
    expect(page.get_by_role("link", name="View comparison")).to_be_hidden()
