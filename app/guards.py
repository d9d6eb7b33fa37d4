"""Requests refused before routing: a URL holding a NUL byte.

No name or path in Trainyard can hold NUL, and PostgreSQL refuses it in text, so a NUL that
reached a query would surface as a 500; it is answered here with a 422 instead.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

_BODY = json.dumps({"error": "invalid", "detail": "the URL holds a NUL byte (%00)",
                    "fields": [{"field": "path", "message": "NUL byte"}]}).encode()


class RefuseNulInUrl:
    """ASGI middleware: a 422 for any request whose path or query string holds a NUL byte."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _has_nul(scope):
            await send({"type": "http.response.start", "status": 422, "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(_BODY)).encode())]})
            await send({"type": "http.response.body", "body": _BODY})
            return
        await self.app(scope, receive, send)


def _has_nul(scope: Scope) -> bool:
    query = bytes(scope.get("query_string", b"")).lower()
    return "\x00" in scope.get("path", "") or b"%00" in query or b"\x00" in query
