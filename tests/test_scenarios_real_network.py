"""Scenarios on real sockets: the same script and verdicts with loopback TLS, HTTPS devices and the push link.

Real time is sped up only 120×: faster, and the real CPU time of a step (building profiles, TLS handshakes)
becomes minutes of virtual time, which a loaded CI machine turns into a different story.
"""

from __future__ import annotations

import dataclasses

import pytest_twisted

from mdmsim.cli_scenario import library, load


def _scenario(stem: str):
    return load(next(p for p in library() if p.stem == stem))


@pytest_twisted.inlineCallbacks
def test_not_now_storm_passes_over_real_tls():
    from twisted.internet import reactor  # pytest-twisted's reactor: this test really uses sockets

    small = dataclasses.replace(_scenario("not_now_storm"), count=12)
    result = yield small.run_real(reactor, factor=120.0)
    assert result.broken is None, result.broken
    assert [o.name for o in result.outcomes if not o.passed] == []


@pytest_twisted.inlineCallbacks
def test_untrusted_server_is_refused_by_real_tls():
    from twisted.internet import reactor

    result = yield _scenario("untrusted_server").run_real(reactor, factor=120.0)
    assert result.broken is None, result.broken
    assert all(o.passed for o in result.outcomes), [(o.name, o.detail) for o in result.outcomes]
