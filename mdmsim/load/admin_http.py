"""A small blocking client for an mdmsim server over HTTPS: the admin JSON API and the /metrics scrape.

The load orchestrator makes a handful of calls per run, so a blocking `http.client` is the simple right tool.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


class AdminHTTPError(Exception):
    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason, self.status = reason, status


@dataclass
class AdminHTTP:
    base_url: str  # https://host:port
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None  # trust only this CA (our server's); None: the system's roots
    timeout: float = 300.0  # enqueuing for 50,000 devices takes a while

    def _connection(self) -> http.client.HTTPConnection:
        parts = urlsplit(self.base_url)
        if parts.scheme == "http":
            return http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=self.timeout)
        context = ssl.create_default_context(cafile=self.ca_file)
        return http.client.HTTPSConnection(parts.hostname, parts.port or 443, timeout=self.timeout,
                                           context=context)

    def raw(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
            ) -> tuple[int, bytes]:
        connection = self._connection()
        try:
            connection.request(method, path, body=body or None, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise AdminHTTPError(f"{method} {self.base_url}{path}: {type(exc).__name__}: {exc}") from None
        finally:
            connection.close()

    def call(self, method: str, path: str, value: Any = None, *, expect: tuple[int, ...] = (200, 201, 207)
             ) -> Any:
        headers = {"Content-Type": "application/json"}
        if self.username is not None:
            token = base64.b64encode(f"{self.username}:{self.password or ''}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        body = b"" if value is None else json.dumps(value).encode()
        status, raw = self.raw(method, path, body, headers)
        try:
            decoded = json.loads(raw) if raw else None
        except ValueError:
            decoded = raw[:200].decode("utf-8", "replace")
        if status not in expect:
            reason = decoded.get("message") if isinstance(decoded, dict) else decoded
            raise AdminHTTPError(f"{method} {path} answered HTTP {status}: {reason}", status)
        return decoded

    def has(self, path: str) -> bool:
        """Whether the server offers this (GET) route at all: 404 means it does not."""
        try:
            self.call("GET", path)
        except AdminHTTPError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def metrics(self) -> str | None:
        """The Prometheus text of GET /metrics, or None when the server has none."""
        status, raw = self.raw("GET", "/metrics")
        return raw.decode("utf-8", "replace") if status == 200 else None
