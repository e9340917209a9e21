"""The server's own durable settings in its data directory: push topic, enrollment token, admin password.

Created once on first start (server.json, mode 0600) and read on every later start.
"""

from __future__ import annotations

import json
import os
import secrets
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from .ca import private_directory

STATE_FILE = "server.json"


@dataclass(frozen=True)
class ServerState:
    topic: str  # com.apple.mgmt.External.<uuid>: what a real push certificate's topic looks like
    enroll_token: str  # lets a fleet fetch enrollment profiles without admin credentials
    admin_password: str

    @classmethod
    def load_or_create(cls, data_dir: Path) -> ServerState:
        path = Path(data_dir) / STATE_FILE
        if path.exists():
            if path.stat().st_mode & 0o777 != 0o600:  # it holds the admin password: written by hand, or older
                path.chmod(0o600)
            try:
                raw = json.loads(path.read_text())
                return cls(raw["topic"], raw["enroll_token"], raw["admin_password"])
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path} is damaged ({exc}); move it away to start afresh") from None
        state = cls(
            topic=f"com.apple.mgmt.External.{uuid.uuid4()}",
            enroll_token=secrets.token_urlsafe(18),
            admin_password=secrets.token_urlsafe(12),
        )
        private_directory(path.parent)
        temporary = path.with_suffix(".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(asdict(state), handle, indent=1)
        os.replace(temporary, path)
        return state
