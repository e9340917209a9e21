"""The demo runs end to end: every device enrolls, device and server agree on readiness, the mail steps
behave as SPEC 7 says (switch on/off, refusal, archived key), and --json carries it all."""

from __future__ import annotations

import json

from mdmsim.cli import main


def test_demo_end_to_end(tmp_path):
    out = tmp_path / "demo.json"
    assert main(["demo", "--devices", "24", "--seed", "3", "--json", str(out)]) == 0
    document = json.loads(out.read_text())
    assert document["enrolled"] == 24
    assert document["drift_devices"] == 0
    mail = {step["title"]: step for step in document["mail"]}
    assert mail["per-message switch ON"]["detail"]["encrypted"] is True
    assert mail["per-message switch OFF"]["detail"]["encrypted"] is False
    assert "carol@partner.test" in mail["recipient without a certificate"]["detail"]["missing"]
    assert mail["old message after key rotation"]["detail"]["decrypted_with"] == "archived"
    versions = {row["os_version"] for row in document["readiness"]}
    assert {"9.3.3", "10.3", "12.0", "17.5"} <= versions
    # "Enable for iOS 9.3.3" is off in Exchange 2: S/MIME is disabled there on 9.3.3 devices.
    legacy = [row for row in document["readiness"] if row["os_version"] == "9.3.3" and row["profile"] == "Exchange 2"]
    assert all(label.startswith("sign disabled") for row in legacy for label in row["device"])
