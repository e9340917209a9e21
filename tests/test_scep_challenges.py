"""SCEP challenge stores: the memory one and the SQLite one behave alike (one conformance test for both), the
SQLite file survives a restart, holds digests only and is private to its owner."""

from __future__ import annotations

import pytest

from mdm_server.scep_challenges import MemoryChallengeStore, Redemption, SQLiteChallengeStore, challenge_digest


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    made = MemoryChallengeStore() if request.param == "memory" else SQLiteChallengeStore(tmp_path / "c.sqlite3")
    yield made
    made.close()


def test_a_challenge_is_valid_until_its_uses_run_out_or_it_expires(store):
    store.add("two-uses", expires_at=100.0, uses=2, user_id="alice")
    store.add("soon", expires_at=10.0, uses=5)
    verdict, found = store.check("two-uses", 50.0)
    assert verdict is Redemption.VALID and found.user_id == "alice" and found.uses_left == 2
    assert store.check("two-uses", 50.0)[1].uses_left == 2  # checking spends nothing
    assert store.redeem("two-uses", 50.0)[0] is Redemption.VALID
    assert store.redeem("two-uses", 60.0)[0] is Redemption.VALID
    assert store.redeem("two-uses", 70.0)[0] is Redemption.USED_UP
    assert store.check("two-uses", 70.0)[1].uses_left == 0
    assert store.redeem("soon", 10.0)[0] is Redemption.EXPIRED
    assert store.check("soon", 11.0)[1].uses_left == 5  # a refused redemption changes nothing
    assert store.redeem("never-issued", 1.0) == (Redemption.UNKNOWN, None)


def test_the_sqlite_store_survives_a_restart_and_keeps_no_clear_challenge(tmp_path):
    path = tmp_path / "scep.sqlite3"
    first = SQLiteChallengeStore(path)
    first.add("the-secret-challenge", expires_at=100.0, uses=1, user_id="bob")
    first.close()
    assert path.stat().st_mode & 0o077 == 0
    assert b"the-secret-challenge" not in b"".join(p.read_bytes() for p in tmp_path.iterdir())
    second = SQLiteChallengeStore(path)
    verdict, found = second.redeem("the-secret-challenge", 5.0)
    assert verdict is Redemption.VALID and found.user_id == "bob"
    assert found.digest == challenge_digest("the-secret-challenge")
    assert second.redeem("the-secret-challenge", 6.0)[0] is Redemption.USED_UP
    second.close()


def test_two_stores_on_one_file_cannot_both_spend_the_last_use(tmp_path):
    path = tmp_path / "scep.sqlite3"
    one, two = SQLiteChallengeStore(path), SQLiteChallengeStore(path)
    one.add("last", expires_at=100.0, uses=1)
    assert [one.redeem("last", 1.0)[0], two.redeem("last", 1.0)[0]] == [Redemption.VALID, Redemption.USED_UP]
    one.close()
    two.close()
