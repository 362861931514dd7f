"""The floor of bench/http_api.py: uvicorn (httptools, as ``arrears serve`` runs it) answering every request
with a constant can-spend answer, no database and no application code. Run by http_api.py --floor; its
latency at the same moment shows how much of the tail is the machine's (scheduling on the shared cores)
rather than the server's work.

    python bench/_http_floor.py PORT
"""

from __future__ import annotations

import gc
import sys
from typing import Any

import uvicorn

BODY = b'{"allowed":true,"available":"190.00","reason":null}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


if __name__ == "__main__":
    gc.freeze()
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), http="httptools", log_level="warning",
                lifespan="off", access_log=False, server_header=False, date_header=True)
