"""A client for the server's admin JSON API, in memory (scenarios, demo) or over HTTP(S).

Scenarios drive the server only through this public API, never through its internals.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from device_sim.memory_http import MemoryHTTP


class AdminAPIError(Exception):
    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        reason = body.get("message") if isinstance(body, dict) else body
        super().__init__(f"{method} {path} → HTTP {status}: {reason}")
        self.status = status
        self.body = body


@dataclass
class AdminClient:
    http: MemoryHTTP
    username: str
    password: str

    def request(self, method: str, path: str, body: Any = None, *, expect: tuple[int, ...] = (200, 201, 207)):
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        headers = {"Authorization": f"Basic {token}"}
        raw = b""
        if body is not None:
            raw = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        response = self.http.request(method, path, raw, headers)
        try:
            decoded = json.loads(response.body) if response.body else None
        except ValueError:
            decoded = response.body.decode("utf-8", "replace")
        if response.status not in expect:
            raise AdminAPIError(method, path, response.status, decoded)
        return decoded

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.request("POST", path, body if body is not None else {}, **kw)

    def put(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.request("PUT", path, body if body is not None else {}, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.request("DELETE", path, **kw)
