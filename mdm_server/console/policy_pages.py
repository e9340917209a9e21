"""The console's sync policies page: Name, Status, Priority, Sync Interval and labels, created and edited
through LabelAdmin and validated by `SyncPolicy.from_json`, as the API's are.
"""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from ..admin.apply import LabelAdmin
from ..admin.contracts import AdminError
from ..admin.sync_policy import SyncPolicy
from .admin_area import AdminArea, SectionRoute
from .pages import field
from .sessions import Session

_POLICY = r"(?P<policy_id>[^/]+)"


class PolicyPages:
    def __init__(self, area: AdminArea, admin: LabelAdmin) -> None:
        self.area, self.admin = area, admin

    def routes(self) -> list[SectionRoute]:
        return [
            (b"GET", "/policies", self.listing),
            (b"POST", "/policies", self.create),
            (b"POST", f"/policies/{_POLICY}", self.update),
            (b"POST", f"/policies/{_POLICY}/delete", self.delete),
        ]

    def listing(self, request: Request, session: Session, status: int = 200, **messages: Any) -> bytes:
        policies = [policy.to_json() for policy in self.admin.policies.all()]
        return self.area.page(request, session, "policies.html", status, policies=policies,
                              labels=self.admin.labels.all(), **messages)

    def create(self, request: Request, session: Session) -> bytes:
        try:
            policy = self.admin.create_policy(SyncPolicy.from_json(_body(request)))
        except AdminError as exc:
            return self.listing(request, session, exc.status, error=exc.reason)
        return self.listing(request, session, 201, notice=_saved(policy))

    def update(self, request: Request, session: Session, policy_id: str) -> bytes:
        try:
            self.admin.policies.get(policy_id)
            policy = self.admin.save_policy(SyncPolicy.from_json(_body(request), policy_id=policy_id))
        except AdminError as exc:
            return self.listing(request, session, exc.status, error=exc.reason)
        return self.listing(request, session, notice=_saved(policy))

    def delete(self, request: Request, session: Session, policy_id: str) -> bytes:
        try:
            policy = self.admin.delete_policy(policy_id)
        except AdminError as exc:
            return self.listing(request, session, exc.status, error=exc.reason)
        return self.listing(request, session, notice=f"sync policy {policy.name} deleted")


def _saved(policy: SyncPolicy) -> str:
    return (f"sync policy {policy.name} saved: its devices sync every {policy.interval / 60:g} minutes "
            "(from their next wake-up)")


def _body(request: Request) -> dict[str, Any]:
    """The API's JSON body; numbers that do not parse stay text so the validator names them."""
    args: dict[bytes, list[bytes]] = request.args or {}
    labels = [raw.decode("utf-8", "replace") for raw in args.get(b"labelIds", [])]
    return {"name": field(request, "name"), "status": field(request, "status") or "active",
            "priority": _number(field(request, "priority") or "0", int),
            "syncIntervalMinutes": _number(field(request, "syncIntervalMinutes"), float), "labelIds": labels}


def _number(raw: str, kind: type) -> Any:
    try:
        value = kind(raw.strip())
    except ValueError:
        return raw
    return int(value) if kind is float and value == int(value) else value
