"""A mixed burst of concurrent requests against a live platform, tallied by status code."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx

from tests.live import Live, unique
from tests.repo_files import config, create_repo, submit

Request = Callable[[httpx.Client], httpx.Response]


@dataclass
class BurstResult:
    """Status codes per kind of request, and the bodies of any 5xx."""

    codes: Counter[tuple[str, int]] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)

    def by_status(self) -> Counter[int]:
        """How many requests got each status code."""
        out: Counter[int] = Counter()
        for (_kind, status), n in self.codes.items():
            out[status] += n
        return out


def mixed_burst(live: Live, *, total: int = 200, parallel: int = 20,
                seed: int = 14) -> BurstResult:
    """`total` requests from `parallel` threads: creates, lists, details, logs, files, deletes."""
    _user, owner = live.new_user("burst")
    token = owner.headers["Authorization"].split()[1]
    repos = [create_repo(owner) for _ in range(3)]
    first = [submit(owner, r, config(unique("seed-"), hypeparameters=[])).json()["id"]
             for r in repos]
    rng = random.Random(seed)
    kinds: dict[str, Callable[[], Request]] = {
        "create": lambda: _create(rng.choice(repos)),
        "list": lambda: _get(f"/api/v1/repos/{rng.choice(repos)}/trainings"),
        "repos": lambda: _get("/api/v1/repos"),
        "detail": lambda: _get(f"/api/v1/trainings/{rng.choice(first)}"),
        "log": lambda: _get(f"/api/v1/trainings/{rng.choice(first)}/log"),
        "read": lambda: _get(f"/api/v1/repos/{rng.choice(repos)}/files/code/main.py"),
        "write": lambda: _put(f"/api/v1/repos/{rng.choice(repos)}/files/notes/"
                              f"{rng.randrange(5)}.txt"),
        "delete": lambda: _delete_newest(rng.choice(repos)),
        "fork": lambda: _fork(),
    }
    weights = {"create": 4, "list": 3, "repos": 1, "detail": 3, "log": 2, "read": 2,
               "write": 2, "delete": 2, "fork": 1}
    plan = rng.choices(list(kinds), weights=[weights[k] for k in kinds], k=total)
    jobs = [(kind, kinds[kind]()) for kind in plan]
    result = BurstResult()

    def one(job: tuple[str, Request]) -> tuple[str, httpx.Response]:
        with live.client(token) as client:
            return job[0], job[1](client)

    with ThreadPoolExecutor(parallel) as pool:
        for kind, response in pool.map(one, jobs):
            result.codes[(kind, response.status_code)] += 1
            if response.status_code >= 500:
                result.server_errors.append(f"{kind}: {response.status_code} {response.text}")
    return result


def _get(path: str) -> Request:
    return lambda c: c.get(path)


def _put(path: str) -> Request:
    return lambda c: c.put(path, content=b"burst\n")


def _create(repo: str) -> Request:
    return lambda c: submit(c, repo, config(unique("b-"), hypeparameters=[]))


def _fork() -> Request:
    return lambda c: c.post("/api/v1/repos", json={"name": unique("f"), "template": "resnet50"})


def _delete_newest(repo: str) -> Request:
    def run(c: httpx.Client) -> httpx.Response:
        listed = c.get(f"/api/v1/repos/{repo}/trainings")
        if listed.status_code != 200 or not listed.json():
            return listed
        return c.delete(f"/api/v1/trainings/{listed.json()[0]['id']}")
    return run
