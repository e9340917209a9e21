"""Shared pieces for scenario scripts: profiles and certificates they install, device-side queries.

Scenario files import from here; `mdmsim scenario list` skips files whose names start with '_'.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from mdm_protocol.payloads import configuration_profile
from mdm_protocol.profile import encode_profile
from mdm_world import procedure
from mdm_world.procedure import Organisation, add_user, upload


def data(value: bytes) -> dict[str, str]:
    """Plist data in the admin API's JSON."""
    return {"$data": base64.b64encode(value).decode("ascii")}


def device_ids(ctx) -> list[str]:
    return [runner.machine.facts.device_id for runner in ctx.devices]


# --- The brief's S/MIME procedure over the admin API, as several scenarios run it ---------------------------------

SMIME_DOMAIN = "acme.test"


def virtual_now(ctx):
    """The world's virtual time as an aware datetime: certificates are issued and judged against it."""
    return datetime.fromtimestamp(ctx.world.now(), UTC)


def smime_address(runner) -> str:
    return f"{runner.machine.facts.user.user_id}@{SMIME_DOMAIN}"


def smime_organisation(ctx):
    """The organisation's S/MIME CA (EC); users' identities are issued from it as each scenario needs."""
    return Organisation.create("Acme", SMIME_DOMAIN, now=virtual_now(ctx))


def register_users(ctx, runners) -> int:
    """POST /api/v2/users for each device's user (user id, address in SMIME_DOMAIN, display name)."""
    for runner in runners:
        user = runner.machine.facts.user
        add_user(ctx.admin, user.user_id, smime_address(runner), user.name)
    return len(runners)


def upload_identities(ctx, org, runners, uploads: dict[str, str]) -> int:
    """Issue and upload one P12 per purpose ("signing" is EC, "encryption" RSA) to the user-provided
    setting given for it; returns the number of uploads."""
    now = virtual_now(ctx)
    for runner in runners:
        address = smime_address(runner)
        for purpose, setting_id in uploads.items():
            org.issue(address, purpose, now=now)
            upload(ctx.admin, runner.machine.facts.user.user_id, setting_id, org.p12(address, purpose))
    return len(runners) * len(uploads)


def account_readiness(runner, setting_id: str):
    """The device's own readiness record for the account an Email/Exchange setting rendered, or None."""
    return runner.machine.readiness.get(f"com.mdmsim.setting.{setting_id}.account")


def device_commands(ctx, runner, request_type: str | None = None) -> list[dict]:
    """The server's record of one device's commands (GET /api/v1/devices/{id}/commands)."""
    return procedure.device_commands(ctx.admin, runner.machine.facts.device_id, request_type)


def ids_of(runners) -> list[str]:
    return [runner.machine.facts.device_id for runner in runners]


def users_of(ctx, indexes) -> list:
    """The SimUsers of fleet devices by index, whether or not those devices were added (enrolled) yet."""
    return [ctx.world.fleet.spec.facts(index).user for index in indexes]


def server_account(ctx, runner, setting_id: str) -> dict | None:
    """The server's expected readiness of one device's account for a setting (GET .../readiness), or None."""
    answer = ctx.admin.get(f"/api/v2/devices/{runner.machine.facts.device_id}/readiness")
    return next((a for a in answer["accounts"] if a.get("settingId") == setting_id), None)


def pkcs12_profile(identifier: str, p12: bytes, password: str, file_name: str, display_name: str) -> bytes:
    """A profile carrying one identity as a com.apple.security.pkcs12 payload; UUIDs derive from the identifier."""
    import uuid

    from mdm_protocol.payloads import pkcs12_payload

    def derived(role: str) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"mdmsim-scenario:{identifier}/{role}")).upper()

    payload = pkcs12_payload(p12, identifier=f"{identifier}.identity", password=password, file_name=file_name,
                             display_name=display_name, uuid=derived("identity"))
    return encode_profile(configuration_profile([payload], identifier=identifier, uuid=derived("profile"),
                                                display_name=display_name))


def install_raw(ctx, runner, profile: bytes) -> str:
    """Queue a raw InstallProfile for one device through POST /api/v1/commands (pushed); its CommandUUID."""
    body = {"deviceIds": [runner.machine.facts.device_id],
            "command": {"RequestType": "InstallProfile", "Payload": data(profile)}}
    results = ctx.admin.post("/api/v1/commands", body)["results"]
    return results[runner.machine.facts.device_id]["commandUuid"]


def enroll_as(ctx, index: int, user_id: str):
    """Add fleet device `index` and enroll it with a profile its user downloads for `user_id` (GET
    /mdm/enroll?user=, admin Basic auth): a second device of an existing user. Returns its runner."""
    from urllib.parse import quote

    token = base64.b64encode(f"{ctx.admin.username}:{ctx.admin.password}".encode()).decode()
    response = ctx.world.admin_http.request("GET", f"/mdm/enroll?user={quote(user_id)}",
                                            headers={"Authorization": f"Basic {token}"})
    if response.status != 200:
        raise RuntimeError(f"enrollment download for {user_id} answered HTTP {response.status}")
    runner = ctx.world.fleet.add(index)
    runner.install_enrollment(response.body)
    return runner


# --- Declarative Device Management: the server's view of what a device reported --------------------------------

def ddm_configuration(ctx, runner, identifier: str) -> dict | None:
    """The server's merged DDM status of one configuration declaration of a device (GET .../ddm-status), or None:
    `{"identifier", "server-token", "active", "valid", "reasons"}` as the device last reported it."""
    answer = ctx.admin.get(f"/api/v2/devices/{runner.machine.facts.device_id}/ddm-status?history=false")
    return next((item for item in answer["declarations"].get("configurations", ())
                 if item["identifier"] == identifier), None)


def held_declarations(runner) -> int:
    """How many declarations the device itself holds (0 before its first sync, and after unenrolment)."""
    ddm = runner.machine._ddm  # noqa: SLF001 - read-only look; the property would create a client
    return 0 if ddm is None else len(ddm.store.held)


def kick_declarative(ctx, runner) -> None:
    """POST /api/v2/devices/{id}/declarative-management: a DeclarativeManagement with the current tokens, pushed."""
    ctx.admin.post(f"/api/v2/devices/{runner.machine.facts.device_id}/declarative-management", expect=(202,))
