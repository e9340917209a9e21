"""The label side of a server for admin tests: a fake Renderer that builds real profiles, fake users and
pusher, a Fleet on a HeapClock, and the V2 labels API through a real twisted.web Site in memory."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.web import resource

from device_sim.clock import HeapClock
from device_sim.memory_http import MemoryHTTP
from mdm_protocol.payloads import configuration_profile, eas_payload, mail_payload, root_certificate_payload
from mdm_protocol.profile import encode_profile, parse_profile
from mdm_protocol.profile_signing import unsigned
from mdm_protocol.report import decode_command
from mdm_server.admin.apply import LabelAdmin
from mdm_server.admin.contracts import AdminError, Rendered, RenderError, User
from mdm_server.admin.docstore import DocumentStore
from mdm_server.admin.labels import Label
from mdm_server.push.interface import ProviderResponse, PushRequest
from mdm_server.storage.interface import Device
from mdm_server.storage.memory import MemoryStorage
from mdm_server.wakeups import Waker
from mdm_server.web.admin_labels_api import AdminLabelsAPI
from mdm_server.web.json_api import JsonAPI
from mdm_server.web.json_io import ApiError
from mdm_server.web.site import make_site

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC).timestamp()


TOPIC = "com.apple.mgmt.External.6f1d2c1e-5b7a-4c1e-9a55-6d6d73696d00"


KeyPair = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


def make_ca(name: str = "Example Corp Mail CA", now: float = T0) -> KeyPair:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start = datetime.fromtimestamp(now, UTC) - timedelta(days=1)
    certificate = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start)
        .not_valid_after(start + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate, key


CA_CERTIFICATE, CA_KEY = make_ca()


CA_DER = CA_CERTIFICATE.public_bytes(serialization.Encoding.DER)


@dataclass
class FakeSetting:
    kind: str  # certificate, user_provided, email, exchange
    revision: int = 1
    host: str = "mail.example.com"
    encrypt: bool = False


class FakeUsers:
    def __init__(self) -> None:
        self.users: dict[str, User] = {}

    def get_user(self, user_id: str) -> User | None:
        return self.users.get(user_id)


class FakeRenderer:
    def __init__(self, users: FakeUsers) -> None:
        self.users = users
        self.settings: dict[str, FakeSetting] = {}
        self.renders = 0
        self._profiles: dict[str, bytes] = {}  # by content hash: equal content renders to equal bytes

    def _setting(self, setting_id: str) -> FakeSetting:
        setting = self.settings.get(setting_id)
        if setting is None:
            raise AdminError(f"no setting {setting_id!r}", 404)
        return setting

    def setting_kind(self, setting_id: str) -> str:
        return self._setting(setting_id).kind

    def check_applicable_to_label(self, setting_id: str) -> None:
        if self._setting(setting_id).kind == "user_provided":
            raise AdminError(f"setting {setting_id} is a user-provided certificate setting and must not be "
                             "applied to labels", 409)

    def render(self, setting_id: str, device: Device) -> Rendered:
        setting, identifier = self._setting(setting_id), f"com.mdmsim.setting.{setting_id}"
        user = self.users.get_user(device.user_id) if device.user_id else None
        if setting.kind in ("email", "exchange") and (user is None or not user.email):
            raise RenderError(f"device {device.device_id} has no user with an email address for $EMAIL$")
        substituted = [setting_id, setting.revision, setting.host, setting.encrypt, user and user.email]
        content_hash = hashlib.sha256(json.dumps(substituted).encode()).hexdigest()
        self.renders += 1
        if content_hash not in self._profiles:
            self._profiles[content_hash] = encode_profile(configuration_profile(
                [self._payload(setting, identifier, user)], identifier=identifier, display_name=setting_id,
            ))
        return Rendered(setting_id, identifier, self._profiles[content_hash], content_hash)

    def _payload(self, setting: FakeSetting, identifier: str, user: User | None):
        if setting.kind == "certificate":
            return root_certificate_payload(CA_DER, identifier=f"{identifier}.root")
        if setting.kind == "email":
            return mail_payload(
                identifier=f"{identifier}.account", email_account_type="EmailTypeIMAP",
                incoming_mail_server_host_name=setting.host, outgoing_mail_server_host_name=setting.host,
                incoming_mail_server_authentication="EmailAuthPassword",
                outgoing_mail_server_authentication="EmailAuthPassword", email_address=user.email,
                smime_encrypt_by_default=setting.encrypt or None,
            )
        return eas_payload(identifier=f"{identifier}.account", host=setting.host, user_name=user.user_id,
                           email_address=user.email, smime_encrypt_by_default=setting.encrypt or None)

    def smime_encryption(self, setting_id: str) -> bool:
        return self._setting(setting_id).encrypt

    def account_key(self, setting_id: str, device: Device) -> tuple[str, str] | None:
        setting = self._setting(setting_id)
        if setting.kind != "exchange" or not device.user_id:
            return None
        return setting.host, device.user_id


class FakePusher:
    def __init__(self) -> None:
        self.pushed: list[bytes] = []
        self.refuse: set[bytes] = set()

    def push(self, request: PushRequest) -> ProviderResponse:
        if request.token in self.refuse:
            return ProviderResponse(410, "Unregistered")
        self.pushed.append(request.token)
        return ProviderResponse(200)


@dataclass
class Fleet:
    """The label side of a server on a HeapClock: MemoryStorage, a document store, the fakes above."""

    docs: DocumentStore = field(default_factory=DocumentStore)
    storage: MemoryStorage = field(default_factory=MemoryStorage)
    clock: HeapClock = field(default_factory=lambda: HeapClock(T0))

    def __post_init__(self) -> None:
        self.users = FakeUsers()
        self.renderer = FakeRenderer(self.users)
        self.pusher = FakePusher()
        self.waker = Waker(self.storage, self.pusher, clock=self.clock)
        self.admin = LabelAdmin(self.storage, self.docs, self.renderer, self.users, clock=self.clock,
                                wake=self.waker.push_now)
        self.admin.start()

    def enroll(self, device_id: str, *, product: str = "iPhone15,2", os_version: str | None = "17.5",
               user: str | None = None, hook: bool = True, **facts) -> Device:
        facts = {"UDID": device_id, "ProductName": product, **facts}
        if os_version is not None:
            facts["OSVersion"] = os_version
        now = self.clock.seconds()
        certificate = hashlib.sha256(f"{device_id}/{now}".encode()).hexdigest()
        self.storage.authenticate(device_id, facts, TOPIC, certificate, now=now)
        self.storage.token_update(device_id, hashlib.sha256(device_id.encode()).digest(), f"m-{device_id}",
                                  now=now)
        if user is not None:
            self.users.users.setdefault(user, User(user, f"{user}@example.com"))
            self.storage.bind_user(device_id, user)
        if hook:
            self.admin.on_device_changed(device_id)
        return self.storage.get_device(device_id)

    def commands(self, device_id: str, request_type: str | None = None) -> list:
        found = self.storage.list_commands(device_id)
        return [c for c in found if request_type is None or c.request_type == request_type]

    def queued(self, device_id: str) -> list[tuple[str, str]]:
        """(RequestType, PayloadIdentifier) of every command queued for the device, in queue order."""
        out = []
        for command in sorted(self.commands(device_id), key=lambda c: c.queued_at):
            keys = decode_command(command.payload).keys
            if command.request_type == "InstallProfile":
                out.append(("InstallProfile", parse_profile(unsigned(keys["Payload"])).identifier))
            else:
                out.append((command.request_type, keys.get("Identifier")))
        return out

    def label(self, label_id: str, **body) -> Label:
        label = Label.from_json({"name": label_id, **body}, label_id=label_id)
        self.admin.save_label(label)
        return self.admin.labels.get(label_id)


class Api:
    """The labels API through a real twisted.web Site, in memory."""

    def __init__(self, fleet: Fleet, *, password: str = "secret") -> None:
        def authorise(request) -> None:
            if request.getPassword() != password.encode():
                raise ApiError(401, "admin credentials required (HTTP Basic)")

        routes = AdminLabelsAPI(fleet.admin, fleet.waker, clock=fleet.clock, trusted_roots=[CA_CERTIFICATE]).routes
        self.resource = JsonAPI(routes, authorise=authorise)
        root = resource.Resource()
        root.putChild(b"api", self.resource)
        self.http = MemoryHTTP(make_site(root, reactor=fleet.clock))
        self.headers = {"Authorization": "Basic YWRtaW46c2VjcmV0", "Content-Type": "application/json"}

    def call(self, method: str, path: str, value=None, headers=None):
        body = b"" if value is None else json.dumps(value).encode()
        response = self.http.request(method, path, body, headers or self.headers)
        return response.status, json.loads(response.body)
