"""A limit on the size of request bodies, enforced before the application reads them (ASGI middleware)."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["MAX_BODY", "BodyLimit"]

MAX_BODY = 1024 * 1024  # bytes: a ledger batch of several thousand lines


class BodyLimit:
    """Answer 413 (a problem document) to a request whose body is over ``limit`` bytes: at once when its
    Content-Length says so, else as soon as the bytes received pass it."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = -1
                if length < 0 or length > self.limit:
                    await self._refuse(send, length)
                    return
        # the body is read here, up to the limit, and handed on whole (bodies are small: it costs nothing)
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.limit:
                await self._refuse(send, received)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send, length: int) -> None:
        detail = (f"the request body is over the limit of {self.limit} bytes; send smaller batches"
                  if length >= 0 else "the Content-Length header is not a number of bytes")
        status = 413 if length >= 0 else 400
        body: dict[str, Any] = {"type": "https://arrears.invalid/problems/" + ("body-too-large" if status == 413
                                                                                else "invalid-request"),
                                "title": "body too large" if status == 413 else "invalid request",
                                "status": status, "detail": detail}
        data = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/problem+json"),
                                (b"content-length", str(len(data)).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": data})
