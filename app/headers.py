"""Security headers: user-written bytes never run as this origin's pages; nothing frames us."""

from __future__ import annotations

from pathlib import Path

from fastapi.responses import FileResponse
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# A document served under this CSP gets a unique opaque origin and no scripts, so a repository
# file, a log line or an output that is really HTML cannot read the dashboard's CSRF token.
USER_CONTENT_CSP = "sandbox; default-src 'none'; frame-ancestors 'none'"
USER_CONTENT_HEADERS = {"X-Content-Type-Options": "nosniff",
                        "Content-Security-Policy": USER_CONTENT_CSP}
TEXT_PLAIN = "text/plain; charset=utf-8"
SNIFF_BYTES = 8192

# Every response, unless the route set its own value.
_DEFAULTS = (("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "SAMEORIGIN"),
             ("Referrer-Policy", "same-origin"))
_API_PREFIX = "/api/"


def looks_like_text(head: bytes) -> bool:
    """True when `head` (the first bytes of a file) is UTF-8 text without NUL bytes."""
    if b"\0" in head:
        return False
    for cut in range(4):  # the sample may end inside a multi-byte character
        try:
            head[:len(head) - cut].decode("utf-8")
            return True
        except UnicodeDecodeError:
            continue
    return False


def user_file_response(path: Path) -> FileResponse:
    """A user's file: inline as `text/plain` when it is text, else an attachment download."""
    with path.open("rb") as f:
        head = f.read(SNIFF_BYTES)
    if looks_like_text(head):
        return FileResponse(path, media_type=TEXT_PLAIN, headers=USER_CONTENT_HEADERS,
                            content_disposition_type="inline", filename=path.name)
    return FileResponse(path, media_type="application/octet-stream",
                        headers=USER_CONTENT_HEADERS, filename=path.name)


class SecurityHeadersMiddleware:
    """Adds nosniff, frame and referrer headers to every response, and to every `/api/`
    response the user-content CSP (JSON needs no scripts; files there are users' bytes)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_api = str(scope.get("path", "")).startswith(_API_PREFIX)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in _DEFAULTS:
                    if name not in headers:
                        headers.append(name, value)
                if is_api and "content-security-policy" not in headers:
                    headers.append("Content-Security-Policy", USER_CONTENT_CSP)
            await send(message)

        await self.app(scope, receive, send_with_headers)
