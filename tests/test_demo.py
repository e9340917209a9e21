"""The demo runs end to end: every device enrolls, device and server agree on readiness, the mail steps
behave as the readiness rules say (switch on/off, refusal, archived key), and --json carries it all; and when
the behaviour is broken on purpose the demo says so and exits 1 (a check that cannot fail is a defect)."""

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


def _broken_run(tmp_path, monkeypatch, target: str, replacement) -> tuple[int, dict]:
    monkeypatch.setattr(target, replacement)
    out = tmp_path / "demo.json"
    code = main(["demo", "--devices", "8", "--seed", "3", "--json", str(out)])
    return code, json.loads(out.read_text())


def test_a_per_message_switch_that_is_ignored_makes_the_demo_fail(tmp_path, monkeypatch):
    """Mail is encrypted whatever the switch says: the OFF step must be judged a failure, and the exit 1."""
    from device_sim.mail import compose

    original = compose._decide_encryption
    code, document = _broken_run(tmp_path, monkeypatch, "device_sim.mail.compose._decide_encryption",
                                 lambda readiness, encrypt: original(readiness, True))
    assert code == 1
    mail = {step["title"]: step for step in document["mail"]}
    assert mail["per-message switch ON"]["ok"] is True
    assert mail["per-message switch OFF"]["ok"] is False
    assert mail["per-message switch OFF"]["detail"]["encrypted"] is True
    assert document["verdict"]["passed"] is False


def test_mail_that_is_never_signed_fails_every_step_that_expects_a_signature(tmp_path, monkeypatch):
    code, document = _broken_run(tmp_path, monkeypatch, "device_sim.mail.compose._decide_signing",
                                 lambda readiness, sign: False)
    assert code == 1
    verdicts = {step["title"]: step["ok"] for step in document["mail"]}
    assert verdicts["per-message switch ON"] is False and verdicts["per-message switch OFF"] is False
    assert verdicts["recipient without a certificate"] is True  # refused before signing mattered


def test_a_fleet_without_the_per_message_switch_is_a_failed_demo_not_a_traceback(tmp_path, monkeypatch):
    """Readiness that never offers the per-message switch: the demo has no sender to show it with."""
    import dataclasses

    from device_sim import readiness

    original = readiness.smime_policy
    code, document = _broken_run(tmp_path, monkeypatch, "device_sim.readiness.smime_policy",
                                 lambda payload, version: dataclasses.replace(original(payload, version),
                                                                              per_message_switch=False))
    assert code == 1
    assert [step["ok"] for step in document["mail"]] == [False]
    assert "no sender with the per-message switch" in document["mail"][0]["outcome"]


def test_ctrl_c_during_the_demo_exits_130_without_a_traceback(monkeypatch, capsys):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("mdm_world.demo_setup.build", interrupt)
    assert main(["demo", "--devices", "2"]) == 130
    assert "interrupted" in capsys.readouterr().err
