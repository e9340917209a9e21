"""Keeps one server process's admin model in step with what the other processes on its database change.

Documents are the truth (PostgreSQL); each process caches some in memory (settings, users, labels and their
members, sync policies, deliveries, ownership). A "doc <kind> <id>" notice drops or re-reads the one entry; a
"device <id>..." notice re-evaluates those devices' filter labels and sync slots, never queueing anything:
the process that saw the check-in has already reconciled it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from ..admin.apply import DELIVERY_KIND
from ..admin.device_kind import ATTRIBUTES_KIND
from ..admin.labels import LABEL_KIND
from ..admin.settings_store import DOCUMENT_KIND as SETTING_KIND
from ..admin.sync_policy import POLICY_KIND
from ..admin.users import DOCUMENT_KIND as USER_KIND
from ..admin_model import AdminModel
from .notices import Notice

log = logging.getLogger(__name__)
USER_DEVICES = 1000  # a user has few devices; the labels API reads no more either


class AdminCoherence:
    """`apply(notice)` for "doc" and "device" notices; other topics are someone else's."""

    def __init__(self, admin: AdminModel) -> None:
        self.admin = admin
        self.applied = 0  # notices applied (tests and GET /metrics read it)
        labels = admin.labels
        self._documents: dict[str, Callable[[str], None]] = {
            SETTING_KIND: admin.settings.forget,
            USER_KIND: self._user,
            LABEL_KIND: lambda label_id: labels.refresh_intervals(labels.labels.reload(label_id)),
            POLICY_KIND: self._policy,
            DELIVERY_KIND: labels.delivery.reload,
            ATTRIBUTES_KIND: self._attributes,
        }

    def apply(self, notice: Notice) -> None:
        if notice.topic == "device":
            for device_id in notice.words:
                self.admin.labels.reschedule(device_id)
            self.applied += 1
        elif notice.topic == "doc" and notice.words:
            kind, doc_id = notice.words[0], " ".join(notice.words[1:])
            handler = self._documents.get(kind)
            if handler is not None:  # the other kinds are read through on every use: nothing cached
                for one in [doc_id] if doc_id else self._all(kind):
                    handler(one)
            self.applied += 1

    def _all(self, kind: str) -> Iterable[str]:
        """A notice without an id (one too long for a notice): every document of the kind, and every one known."""
        ids = {doc_id for doc_id, _ in self.admin.docs.list(kind)}
        if kind == LABEL_KIND:
            ids |= {label.label_id for label in self.admin.labels.labels.all()}
        elif kind == POLICY_KIND:
            ids |= {policy.policy_id for policy in self.admin.labels.policies.all()}
        return sorted(ids)

    def _user(self, user_id: str) -> None:
        self.admin.users.forget(user_id)
        for device in self.admin.labels.storage.list_devices(user_id=user_id, limit=USER_DEVICES):
            self.admin.labels.reschedule(device.device_id)  # user attributes feed filter labels

    def _policy(self, policy_id: str) -> None:
        labels = self.admin.labels
        before, after = labels.policies.reload(policy_id)
        reach: set[str] = set()
        for policy in (before, after):
            if policy is not None:
                reach |= labels.policy_reach(policy)
        labels.refresh_intervals(reach)

    def _attributes(self, device_id: str) -> None:
        self.admin.labels.inventory.reload(device_id)
        self.admin.labels.reschedule(device_id)
