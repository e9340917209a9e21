"""The DDM declaration and status stores, on every document backend (in-memory SQLite, SQLite, PostgreSQL).

Tokens move iff content changes, sources replace only their own declarations, channels stay apart, status merges
incrementally (a FullReport replaces) and keeps a bounded history, and everything survives a reopen.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from kits.postgres import documents_opener

from mdm_protocol.ddm import (
    Declaration,
    DeclarationKind,
    DeclarationsStatus,
    DeclarationStatus,
    StatusError,
    StatusReason,
    StatusReport,
    Validity,
)
from mdm_server.admin.docstore import DocumentStore
from mdm_server.declaration_status import StatusStore
from mdm_server.declarations import DeclarationStore, Offered

T0 = 1_800_000_000.0
MAIL = Declaration.create("com.apple.configuration.account.mail", "mail", {"VisibleName": "Work"})
ASSET = Declaration.create("com.apple.asset.credential.identity", "id",
                           {"Reference": {"DataURL": "https://mdm.example/a"}})
ACTIVATION = Declaration.create("com.apple.activation.simple", "act", {"StandardConfigurations": ["mail"]})


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def opener(request, tmp_path):
    if request.param == "memory":
        docs = DocumentStore(":memory:")
        return lambda: docs  # in memory there is nothing to reopen: the same store
    return documents_opener(request.param, tmp_path)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def store(opener, clock):
    return DeclarationStore(opener(), now=clock)


def test_an_unknown_channel_offers_nothing(store):
    channel = store.get("d1")
    assert channel.declarations == () and channel.manifest().configurations == ()
    assert channel.tokens().declarations_token == channel.token
    assert channel.tokens().timestamp == datetime.fromtimestamp(0, UTC)


def test_tokens_move_iff_content_changes(store, clock):
    assert store.replace_source("d1", None, "s1", [MAIL, ASSET, ACTIVATION]) is True
    first = store.get("d1")
    assert first.changed_at == T0 and {d.identifier for d in first.declarations} == {"mail", "id", "act"}
    clock.now += 60
    assert store.replace_source("d1", None, "s1", [ACTIVATION, MAIL, ASSET]) is False  # same content
    again = store.get("d1")
    assert again.token == first.token and again.changed_at == T0  # unchanged re-send keeps tokens and time
    assert [item.server_token for _, item in again.manifest().items()] == [
        item.server_token for _, item in first.manifest().items()]
    edited = Declaration.create(MAIL.type, MAIL.identifier, {"VisibleName": "Work mail"})
    assert store.replace_source("d1", None, "s1", [edited, ASSET, ACTIVATION]) is True
    changed = store.get("d1")
    assert changed.token != first.token and changed.changed_at == T0 + 60
    assert changed.tokens().timestamp == datetime.fromtimestamp(T0 + 60, UTC)
    assert changed.find(DeclarationKind.CONFIGURATION, "mail").declaration == edited
    # Only the edited declaration's server token moved.
    assert changed.find(DeclarationKind.ASSET, "id").declaration.server_token == ASSET.server_token


def test_sources_replace_only_their_own(store):
    other = Declaration.create("com.apple.configuration.account.exchange", "eas", {"UserIdentityAssetReference": "x"})
    store.replace_source("d1", None, "s1", [MAIL])
    store.replace_source("d1", None, "s2", [other])
    assert {d.identifier for d in store.get("d1").declarations} == {"mail", "eas"}
    assert store.get("d1").of_source("s2") == (other,)
    assert store.replace_source("d1", None, "s1", []) is True
    assert store.get("d1").declarations == (other,)
    with pytest.raises(ValueError, match="another source"):
        store.replace_source("d1", None, "s1", [Declaration.create(other.type, "eas", {})])
    with pytest.raises(ValueError, match="twice"):
        store.replace_source("d1", None, "s3", [MAIL, MAIL])
    assert store.replace_source("d1", None, "s2", []) is True
    assert store.get("d1").declarations == ()


def test_channels_are_kept_apart(store):
    store.replace_source("d1", None, "s1", [MAIL])
    store.replace_source("d1", "alice", "s1", [ASSET])
    store.replace_source("d2", None, "s1", [ACTIVATION])
    assert store.get("d1").declarations == (MAIL,)
    assert store.get("d1", "alice").declarations == (ASSET,)
    assert store.get("d1", "bob").declarations == ()
    assert store.get("d2").declarations == (ACTIVATION,)
    assert store.drop_channel("d1", "alice") and store.get("d1", "alice").declarations == ()
    assert store.get("d1").declarations == (MAIL,)


def test_private_data_is_kept_beside_the_declaration_and_counts_as_a_change(store, clock):
    store.replace_source("d1", None, "s1", [Offered(ASSET, "s1", {"user": "alice", "setting": "p12"})])
    assert store.get("d1").find(DeclarationKind.ASSET, "id").private == {"user": "alice", "setting": "p12"}
    token = store.get("d1").token
    clock.now += 5
    assert store.replace_source("d1", None, "s1", [Offered(ASSET, "s1", {"user": "bob", "setting": "p12"})])
    after = store.get("d1")
    assert after.find(DeclarationKind.ASSET, "id").private["user"] == "bob"
    assert after.token == token and after.changed_at == T0  # the device sees no change: same declarations


def test_declarations_survive_a_reopen(opener, clock):
    DeclarationStore(opener(), now=clock).replace_source("d1", "alice", "s1", [Offered(ASSET, "s1", {"k": 1})])
    again = DeclarationStore(opener(), now=clock).get("d1", "alice")
    assert again.declarations == (ASSET,) and again.offered[0].private == {"k": 1} and again.changed_at == T0


def _report(*statuses: DeclarationStatus, full: bool | None = None, **items) -> StatusReport:
    return StatusReport.create(items, declarations=DeclarationsStatus(configurations=statuses), full_report=full)


def test_status_merges_incremental_reports_and_a_full_report_replaces(opener):
    status = StatusStore(opener())
    ok = DeclarationStatus("mail", MAIL.server_token, True, Validity.VALID)
    bad = DeclarationStatus("eas", "t", False, Validity.INVALID, (StatusReason("Error.ConfigurationCannotBeApplied"),))
    status.record("d1", None, _report(ok, bad, **{"device.operating-system.version": "17.4",
                                                 "device.model.family": "iPhone"}), now=T0)
    fixed = DeclarationStatus("eas", "t2", True, Validity.VALID)
    kept = status.record("d1", None, _report(fixed, **{"device.operating-system.version": "17.5"}), now=T0 + 1)
    assert kept.declaration(DeclarationKind.CONFIGURATION, "mail") == ok  # not in the second report: kept
    assert kept.declaration(DeclarationKind.CONFIGURATION, "eas") == fixed
    assert kept.items == {"device": {"operating-system": {"version": "17.5"}, "model": {"family": "iPhone"}}}
    assert kept.updated_at == T0 + 1 and len(kept.history) == 2
    full = status.record("d1", None, _report(fixed, full=True, **{"device.model.family": "iPad"}), now=T0 + 2)
    assert full.declaration(DeclarationKind.CONFIGURATION, "mail") is None
    assert full.items == {"device": {"model": {"family": "iPad"}}}
    assert status.get("d1") == full and status.get("d1", "alice") is None and status.get("d2") is None


def test_status_errors_and_bounded_history(opener):
    status = StatusStore(opener(), history=3)
    error = StatusError("softwareupdate.failure-reason", (StatusReason("Error.Unknown"),))
    for n in range(5):
        status.record("d1", "alice", StatusReport.create({"test.integer-value": n}, errors=[error]), now=T0 + n)
    kept = StatusStore(opener()).get("d1", "alice")  # and it survives a reopen
    assert [entry["receivedAt"] for entry in kept.history] == [T0 + 2, T0 + 3, T0 + 4]
    assert kept.history[-1]["report"]["StatusItems"] == {"test": {"integer-value": 4}}
    assert kept.errors == ({"StatusItem": "softwareupdate.failure-reason", "Reasons": [{"Code": "Error.Unknown"}]},)
    document = kept.to_json()
    assert document["declarations"] == {"activations": [], "configurations": [], "assets": [], "management": []}
    assert document["user"] == "alice" and len(document["history"]) == 3
    assert status.get("d1") is None  # the device channel reported nothing
