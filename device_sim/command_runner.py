"""Runs one MDM command on a simulated device: is it available there, are its keys right, NotNow, then the answer.

The answer becomes the device's report; profile changes go through the device's install rules, other changes
through its `DeviceState`. Each request type's answer is one entry of `ANSWERS`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from mdm_protocol.commands import UnknownRequestType, check_command
from mdm_protocol.ddm import TokensResponse
from mdm_protocol.errors import MessageError
from mdm_protocol.report import Command, Status

from . import answers, app_commands, device_commands
from .answers import Answer
from .behaviour import Behaviour
from .command_table import available
from .device_state import DeviceState
from .facts import DeviceFacts
from .profiles import DeviceProfiles


@dataclass
class CommandContext:
    facts: DeviceFacts
    profiles: DeviceProfiles
    first_unlocked: bool
    behaviour: Behaviour
    rng: random.Random
    now: float
    state_of: Callable[[], DeviceState]  # the device's state, made on first use (profile commands never need it)
    push_token: bytes | None = None

    @property
    def state(self) -> DeviceState:
        return self.state_of()

    @property
    def when(self) -> datetime:
        return datetime.fromtimestamp(self.now, UTC)


def answer_command(command: Command, context: CommandContext) -> Answer:
    if not available(command.request_type, context.facts):
        # Not on this release, kind or supervision: iOS answers exactly as for a request type it never heard of.
        return answers.unknown_request_type(command.request_type)
    try:
        check_command(command)
    except UnknownRequestType:
        return answers.unknown_request_type(command.request_type)
    except MessageError:
        return answers.format_error()  # e.g. RemoveProfile without Identifier (SPEC section 2)
    version = context.facts.os_version
    if answers.may_answer_not_now(command, version, context.first_unlocked):
        return Answer(Status.NOT_NOW)
    rate = context.behaviour.not_now_rate
    if rate and command.request_type not in answers.NEVER_NOT_NOW and context.rng.random() < rate:
        return Answer(Status.NOT_NOW)
    return _run(command, context)


def _install_profile(command: Command, context: CommandContext) -> Answer:
    result = context.profiles.install(command.keys["Payload"], os_version=context.facts.os_version, now=context.when)
    return Answer(Status.ACKNOWLEDGED) if result.ok else Answer(Status.ERROR, result.error_chain)


def _remove_profile(command: Command, context: CommandContext) -> Answer:
    removed = context.profiles.remove(command.keys["Identifier"])
    return Answer(Status.ACKNOWLEDGED) if removed.ok else Answer(Status.ERROR, removed.error_chain)


def _profile_list(command: Command, context: CommandContext) -> Answer:
    items = context.profiles.profile_list_items(os_version=context.facts.os_version,
                                                managed_only=command.keys.get("ManagedOnly", False))
    return Answer(Status.ACKNOWLEDGED, extra={"ProfileList": [item.to_plist() for item in items]})


def _certificate_list(command: Command, context: CommandContext) -> Answer:
    items = context.profiles.certificate_list_items(managed_only=command.keys.get("ManagedOnly", False))
    return Answer(Status.ACKNOWLEDGED, extra={"CertificateList": [item.to_plist() for item in items]})


def _declarative_management(command: Command, context: CommandContext) -> Answer:
    # Acknowledged, then the machine syncs (device_sim.ddm_client). Data, when sent, must be a TokensResponse.
    data = command.keys.get("Data")
    if data is not None:
        try:
            TokensResponse.decode(data)
        except MessageError:
            return answers.format_error()
    return Answer(Status.ACKNOWLEDGED)


def _device_information(command: Command, context: CommandContext) -> Answer:
    return answers.device_information(context.facts, list(command.keys["Queries"]), context.state,
                                      context.push_token)


Handler = Callable[[Command, CommandContext], Answer]
ANSWERS: dict[str, Handler] = {
    "InstallProfile": _install_profile, "RemoveProfile": _remove_profile, "ProfileList": _profile_list,
    "CertificateList": _certificate_list, "DeviceInformation": _device_information,
    "SecurityInfo": device_commands.security_info, "DeviceLock": device_commands.device_lock,
    "EraseDevice": device_commands.erase_device, "ClearPasscode": device_commands.clear_passcode,
    "ClearRestrictionsPassword": device_commands.clear_restrictions_password,
    "RestartDevice": device_commands.restart_device, "ShutDownDevice": device_commands.restart_device,
    "EnableLostMode": device_commands.enable_lost_mode, "DisableLostMode": device_commands.disable_lost_mode,
    "Restrictions": device_commands.restrictions, "Settings": device_commands.settings,
    "AvailableOSUpdates": device_commands.available_os_updates,
    "OSUpdateStatus": device_commands.os_update_status, "ScheduleOSUpdate": device_commands.schedule_os_update,
    "InstalledApplicationList": app_commands.installed_application_list,
    "ManagedApplicationList": app_commands.managed_application_list,
    "InstallApplication": app_commands.install_application, "RemoveApplication": app_commands.remove_application,
    "ProvisioningProfileList": app_commands.provisioning_profile_list,
    "DeclarativeManagement": _declarative_management,
}


def _run(command: Command, context: CommandContext) -> Answer:
    handler = ANSWERS.get(command.request_type)
    return handler(command, context) if handler else answers.unknown_request_type(command.request_type)
