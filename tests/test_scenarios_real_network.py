"""Scenarios on real sockets: the same script and verdicts with loopback TLS, HTTPS devices and the push link."""

from __future__ import annotations

import pytest_twisted

from mdmsim.cli_scenario import library, load


def _scenario(stem: str):
    return load(next(p for p in library() if p.stem == stem))


@pytest_twisted.inlineCallbacks
def test_not_now_storm_passes_over_real_tls():
    from twisted.internet import reactor  # pytest-twisted's reactor: this test really uses sockets

    result = yield _scenario("not_now_storm").run_real(reactor, factor=600.0)
    assert result.broken is None, result.broken
    assert [o.name for o in result.outcomes if not o.passed] == []


@pytest_twisted.inlineCallbacks
def test_untrusted_server_is_refused_by_real_tls():
    from twisted.internet import reactor

    result = yield _scenario("untrusted_server").run_real(reactor, factor=600.0)
    assert result.broken is None, result.broken
    assert all(o.passed for o in result.outcomes), [(o.name, o.detail) for o in result.outcomes]
