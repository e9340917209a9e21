"""Several server processes on one PostgreSQL: one leader pushes and wakes, leadership moves when it dies, and a
change made through one process's admin API is what the others apply (LISTEN/NOTIFY keeps their caches in step).

Two `MDMServer`s in this process stand for two workers: each has its own connections, caches and clock, exactly
as two processes would; notices are handed over by waiting on their sockets (bounded), never by sleeping.
"""

from __future__ import annotations

import base64
import select
import time

import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from kits.postgres import SERVER
from server_kit import AdminClient, SignedDevice, make_server

from mdm_server.storage.interface import CommandStatus
from mdm_server.workers.coordination import LEADER_POLL
from mdm_server.workers.notices import MAX_PAYLOAD, Notice, chunked
from mdm_server.workers.sockets import ListenError, parse_listen, with_port
from mdmsim.cli import main

NOTICE_DEADLINE = 10.0  # seconds for a notice to cross; they take milliseconds


@pytest.fixture
def database():
    url, schema = SERVER.ensure(), SERVER.new_schema()
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(f"CREATE SCHEMA {schema}")
    return f"{url}?options=-csearch_path%3D{schema}"


@pytest.fixture
def pair(tmp_path, database):
    """Workers A and B: one data directory, one database; A started first, so A leads."""
    servers = [make_server(tmp_path, in_memory=False, database=database) for _ in range(2)]
    yield servers
    for server in servers:
        server.stopService()


def deliver(until, *servers) -> None:
    """Hand each server the notices that reach it until `until()` holds; fails after NOTICE_DEADLINE."""
    deadline = time.monotonic() + NOTICE_DEADLINE
    links = [server.coordination.link for server in servers]
    while not until():
        remaining = deadline - time.monotonic()
        assert remaining > 0, "the notice never arrived"
        select.select(links, [], [], min(remaining, 0.5))
        for link in links:
            link.drain()


def ca_pem(server) -> str:
    return base64.b64encode(server.ca.certificate.public_bytes(serialization.Encoding.PEM)).decode()


def install_profiles(server, device_id: str) -> list:
    return [c for c in server.storage.list_commands(device_id) if c.request_type == "InstallProfile"]


def test_one_leader_pushes_for_all_and_another_takes_over_when_it_dies(pair):
    a, b = pair
    assert a.coordination.leading and not b.coordination.leading
    assert a.admin.labels.schedule._running and not b.admin.labels.schedule._running  # noqa: SLF001
    device = SignedDevice(b, "UDID-WORKERS-1")
    device.enroll()  # through B
    a.apns.register(device.token, a.state.topic)  # devices attach to the leader's push link
    # A learnt of the device from B's notice: the leader's sync wake-ups cover devices enrolled anywhere.
    deliver(lambda: a.admin.labels.schedule.interval_of(device.udid) is not None, a)
    # ... and its console's device search finds it too.
    assert a.admin.labels.search.candidates(device.udid.lower(), after=None, limit=10) == [device.udid]
    status, body = AdminClient(b).post("/api/v1/commands", {"deviceIds": [device.udid], "push": True,
                                                            "command": {"RequestType": "DeviceInformation"}})
    assert status == 201 and body["results"][device.udid]["push"]["pushed"]  # handed to the leader
    assert b.waker.outcomes["relayed"] == 1 and not any(a.waker.outcomes.values())
    deliver(lambda: a.waker.outcomes["accepted"] == 1, a)
    assert a.storage.get_push(device.udid).outcome.value == "accepted"

    a.stopService()  # its connection closes: PostgreSQL releases the leader lock
    assert not b.coordination.leading
    deadline = time.monotonic() + NOTICE_DEADLINE
    while not b.coordination.leading:  # PostgreSQL frees the lock once it has seen the connection end
        assert time.monotonic() < deadline, "the leader lock was never released"
        b.clock.advance(LEADER_POLL)
    assert b.coordination.leading and b.admin.labels.schedule._running  # noqa: SLF001
    # The new leader pushes every device with a command waiting: the old one's undelivered pushes died with it.
    assert b.coordination.catch_up_pushes == 1 and b.waker.outcomes["relayed"] == 1


def test_a_label_changed_through_worker_a_is_applied_by_worker_b_at_once(pair):
    a, b = pair
    api = AdminClient(a)
    status, setting = api.post("/api/v2/settings", {"kind": "certificate", "name": "Mail CA",
                                                    "certificate": ca_pem(a)})
    assert status == 201
    label = {"id": "phones", "name": "Phones", "type": "filter", "criteria": {"osVersionMin": "17.0"}}
    assert api.post("/api/v2/labels", label)[0] == 201
    assert api.post("/api/v2/labels/phones/apply", {"settingId": setting["id"]})[0] == 200
    books = b.admin.labels.labels
    deliver(lambda: "phones" in books and books.get("phones").setting_ids == {setting["id"]}, b)

    device = SignedDevice(b, "UDID-WORKERS-2")
    device.enroll()  # through B, which never saw the label being made: it queues what the label carries
    assert [c.status for c in install_profiles(b, device.udid)] == [CommandStatus.QUEUED]
    assert b.admin.labels.labels.members("phones") == {device.udid}

    # A hears of the device and of B's delivery: a check-in through A queues nothing a second time.
    deliver(lambda: a.admin.labels.delivery.delivered(device.udid), a)
    assert a.admin.labels.labels.members("phones") == {device.udid}
    again = SignedDevice(a, device.udid, certificate=device.certificate, key=device.key)
    assert again.token_update().status == 200
    assert len(install_profiles(a, device.udid)) == 1

    # An edit through A: B's copy of the setting and of the label follow.
    edited = {"name": "Mail CA", "description": "verifies senders", "certificate": ca_pem(a)}
    assert api.call("PUT", f"/api/v2/settings/{setting['id']}", edited)[0] == 200
    deliver(lambda: b.admin.settings.get(setting["id"]).version == 2, b)
    narrower = {**label, "criteria": {"osVersionMin": "18.0"}}
    assert api.call("PUT", "/api/v2/labels/phones", narrower)[0] == 200
    deliver(lambda: not b.admin.labels.labels.members("phones"), b)
    assert b.admin.labels.labels.get("phones").criteria.os_version_min is not None


def test_workers_above_one_need_postgresql_and_a_bindable_endpoint(tmp_path, capsys):
    assert main(["serve", "--data-dir", str(tmp_path), "--workers", "2"]) == 2
    assert "--workers above 1 needs --database" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--data-dir", str(tmp_path), "--workers", "0"])
    assert exited.value.code == 2
    assert parse_listen("ssl:8443:interface=127.0.0.1:backlog=64").backlog == 64
    assert parse_listen(r"tcp:0:interface=\:\:1").interface == "::1"
    assert with_port("ssl:0:interface=127.0.0.1", 4443) == "ssl:4443:interface=127.0.0.1"
    for description in ("unix:/tmp/s", "ssl:https", "tcp:80:reuse=1"):
        with pytest.raises(ListenError):
            parse_listen(description)


def test_notices_are_split_under_postgresqls_payload_limit():
    ids = [f"{n:040d}" for n in range(500)]
    payloads = chunked("push", ids)
    assert len(payloads) > 1 and all(len(p) <= MAX_PAYLOAD for p in payloads)
    assert [word for p in payloads for word in Notice.parse(p).words] == ids
    assert chunked("push", []) == []
    assert Notice.parse("doc label phones") == Notice("doc", ("label", "phones"))
