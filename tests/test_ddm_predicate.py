"""The simple activation predicates a simulated device reads (device_sim.ddm_predicate)."""

from __future__ import annotations

import pytest

from device_sim.ddm_predicate import PredicateError, evaluate

STATUS = {"device.operating-system.version": "17.5", "device.model.family": "iPhone",
          "device.model.identifier": "iPhone16,1"}


def status(name):
    return STATUS[name]


@pytest.mark.parametrize(("text", "expected"), [
    ("TRUEPREDICATE", True),
    ("FALSEPREDICATE", False),
    ("@status(device.model.family) == 'iPhone'", True),
    ('@status(device.model.family) == "iPad"', False),
    ("@status(device.model.family) != 'iPad' && @status(device.operating-system.version) >= '17.0'", True),
    ("@status(device.operating-system.version) < '17.10'", True),  # versions compare as versions
    ("@status(device.operating-system.version) > '9.3'", True),
    ("@status(device.model.identifier) BEGINSWITH 'iPhone'", True),
    ("@status(device.model.identifier) CONTAINS '16,'", True),
    ("@status(device.model.identifier) ENDSWITH ',2'", False),
    ("@status(device.model.family) IN {'iPad', 'iPhone'}", True),
    ("NOT (@status(device.model.family) == 'iPhone') OR @property(tier) == 'gold'", True),
    ("@property(missing) == 'x'", False),
    ("@property(missing) > 3", False),  # nil compares false, never raises
    ("(@status(device.model.family) == 'iPhone') and not FALSEPREDICATE", True),
])
def test_predicates(text, expected):
    assert evaluate(text, status, {"tier": "gold"}) is expected


@pytest.mark.parametrize("text", ["", "@status(device.model.family) ==", "(TRUEPREDICATE", "a LIKE 'b'",
                                  "SUBQUERY(x, $y, $y > 1).@count > 0", "@status(x) == 'a' junk"])
def test_what_cannot_be_parsed(text):
    with pytest.raises(PredicateError) as caught:
        evaluate(text, status, {})
    assert caught.value.parse is True


def test_a_status_item_the_device_lacks_cannot_be_evaluated():
    with pytest.raises(PredicateError) as caught:
        evaluate("@status(device.colour) == 'red'", status, {})
    assert (caught.value.parse, caught.value.reason) == (
        False, "status item device.colour is not available on this device")


def test_and_or_short_circuit_like_nspredicate():
    assert evaluate("FALSEPREDICATE AND @status(device.colour) == 'red'", status, {}) is False
    assert evaluate("TRUEPREDICATE OR @status(device.colour) == 'red'", status, {}) is True
