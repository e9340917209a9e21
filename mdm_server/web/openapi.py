"""The admin API's OpenAPI 3.1 document, in one place: every mounted route, its parameters and its shapes.

Served without credentials at GET /api/openapi.json; tests check it against the mounted routes, and
`tools/gen_api_docs.py` renders docs/api.md from it.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.web.server import Request

from .api_shapes import DEFAULT_LIMIT, MAX_LIMIT
from .json_api import Route, public

OPENAPI_PATH = "/api/openapi.json"

INTRO = """\
The admin API of the mdmsim MDM server: devices and their command queues, raw commands, pushes (v1); settings,
users and their certificates, labels, Apply to Label, sync policies, force check-in, conflicts and S/MIME
readiness, Declarative Device Management: declarations, status and sync (v2).

**Authentication.** HTTP Basic with the admin user (`--admin-user`, default `admin`) and its password
(`--admin-password` or `MDMSIM_ADMIN_PASSWORD`; otherwise generated into `server.json` in the data directory
on first start, as `mdmsim serve` prints). Ten failed logins from one address within 60 s are answered
`429 too_many_requests`, with a `Retry-After` header, until the window has passed (even with the right
password, so guessing cannot go on). This document itself is served without credentials: it holds no data,
only the API's shape, and tools (schemathesis, code generators) can read it as they find it.

**Requests.** Bodies are JSON sent with `Content-Type: application/json` (anything else is `415`, so a
cross-site HTML form cannot queue commands), at most 32 levels deep, without NaN or Infinity. Query strings must
be valid percent-encoded UTF-8; unknown query parameters and unknown filter values are refused (`400`), with the
valid ones in the message. Keys are camelCase; Apple's own keys (`RequestType`, device facts, `ErrorChain`) keep
Apple's spelling.

**Errors.** Every failure is `{"code": "...", "message": "..."}`: `code` is stable and meant for programs
(`invalid_request`, `invalid_json`, `json_too_deep`, `bad_encoding`, `unknown_parameter`, `invalid_parameter`,
`unauthorized`, `not_found`, `method_not_allowed`, `conflict`, `unsupported_media_type`, `too_many_requests`,
`storage_full`, `internal_error`); `message` is for people. `429` and `503` carry a `Retry-After` header (seconds):
`503 storage_full` means the server's disk is full and nothing was changed; the same request succeeds once
space is freed.

**Lists.** Every list answers `{"items": [...], "nextCursor": "..." | null}`. Pass `cursor=<nextCursor>` (and
optionally `limit`, 1 to 10000, default 100) for the next page; `nextCursor` is null on the last page. Cursors
are opaque.

**Plist values in JSON.** Raw commands are plists, and JSON lacks some plist types: binary data travels as
`{"$data": "<base64>"}` (both ways), dates as ISO 8601 strings, plist UIDs (binary plists) as `{"$uid": n}`.
A plist has no null, so `null` inside a command is refused.

**Managed Apple ID.** The `$MANAGED_APPLE_ID$` variable in a setting is filled from the device's user: the
custom attribute `MANAGED_APPLE_ID` (`PUT /api/v2/users/{user_id}` with `{"custom": {"MANAGED_APPLE_ID":
"jane@appleid.example.com"}}`), or else the `ManagedAppleID` the device reported. It exists only on Shared iPad
and User Enrollment devices; on any other device rendering the setting fails with that reason.
"""

ENQUEUE = """\
Queue one raw command for many devices and push them. `command` is the command dictionary as Apple documents
it: `RequestType` and its keys (`{"RequestType": "InstallProfile", "Payload": {"$data": "<base64 profile>"}}`);
the server adds the `CommandUUID`. `priority` (integer, default 0): higher goes first, first-in first-out
within one priority. `timeout` (seconds, optional): how long after the command was sent the server waits for
an answer before marking it `TimedOut`. `push` (default true): push the devices now. Answers 201 when every
device got the command, 207 when some did not (each device's own `status` says why: 404 unknown, 409 checked
out)."""


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _page(item: str) -> dict[str, Any]:
    return {"type": "object", "required": ["items", "nextCursor"], "properties": {
        "items": {"type": "array", "items": _ref(item)}, "nextCursor": {"type": ["string", "null"]}}}


OBJECT: dict[str, Any] = {"type": "object"}
STRING: dict[str, Any] = {"type": "string"}
STRINGS: dict[str, Any] = {"type": "array", "items": STRING}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["code", "message"], "additionalProperties": False,
              "properties": {"code": STRING, "message": STRING}},
    "Ping": {"type": "object", "required": ["status", "devices"],
             "properties": {"status": {"const": "ok"}, "devices": {"type": "object",
                                                                    "additionalProperties": {"type": "integer"}}}},
    "Push": {"type": "object", "required": ["pushed"], "properties": {"pushed": {"type": "boolean"},
                                                                      "reason": {"type": ["string", "null"]}}},
    "Command": {"type": "object", "required": ["commandUuid", "requestType", "status", "errorChain"],
                "properties": {"commandUuid": STRING, "requestType": STRING, "status": STRING,
                               "errorChain": {"type": "array", "items": OBJECT}}},
    "DeviceV1": {"type": "object", "required": ["deviceId", "state", "facts", "checkedInSincePush"],
                 "properties": {"deviceId": STRING, "state": {"enum": ["authenticated", "enrolled", "unenrolled"]},
                                "facts": OBJECT, "push": {"oneOf": [_ref("Push"), {"type": "null"}]},
                                "checkedInSincePush": {"type": "boolean"},
                                "commands": {"type": "array", "items": _ref("Command")},
                                "userChannels": {"type": "array", "items": _ref("UserChannel")}}},
    "UserChannel": {"type": "object", "required": ["deviceId", "userId", "pushMagic", "tokenUpdatedAt"],
                    "properties": {"deviceId": STRING, "userId": STRING,
                                   "userShortName": {"type": ["string", "null"]}, "pushToken": OBJECT,
                                   "pushMagic": STRING, "tokenUpdatedAt": {"type": "number"}}},
    "EnqueueRequest": {"type": "object", "required": ["deviceIds", "command"], "properties": {
        "deviceIds": {**STRINGS, "minItems": 1}, "command": {"type": "object", "required": ["RequestType"],
                                                             "properties": {"RequestType": STRING}},
        "priority": {"type": "integer"}, "timeout": {"type": "number", "exclusiveMinimum": 0},
        "push": {"type": "boolean"}}},
    "DeviceIds": {"type": "object", "required": ["deviceIds"], "properties": {"deviceIds": {**STRINGS,
                                                                                           "minItems": 1}}},
    "BatchResults": {"type": "object", "required": ["results"],
                     "properties": {"results": {"type": "object", "additionalProperties": OBJECT}}},
    "Deleted": {"type": "object", "required": ["deleted"]},
    "Setting": {"type": "object", "required": ["id", "kind", "version"],
                "properties": {"id": STRING, "kind": STRING, "version": {"type": "integer"}}},
    "SettingInput": {"type": "object", "required": ["kind"], "properties": {"kind": STRING}},
    "MissingCertificates": {"type": "object", "required": ["settingId", "identitySettings", "missing"]},
    "User": {"type": "object", "required": ["userId"], "properties": {
        "userId": STRING, "email": {"type": ["string", "null"]}, "displayName": {"type": ["string", "null"]},
        "custom": {"type": "object", "additionalProperties": STRING}}},
    "PasswordInput": {"type": "object", "required": ["password"], "properties": {
        "password": {"type": "string", "minLength": 8, "maxLength": 1024}}},
    "PasswordSet": {"type": "object", "required": ["userId", "hasPassword"]},
    "UserCertificates": {"type": "object", "required": ["settingId", "current", "history"]},
    "CertificateUpload": {"type": "object", "required": ["p12"], "properties": {
        "settingId": STRING, "type": STRING, "p12": {"type": "string", "description": "base64 PKCS#12"},
        "password": STRING}},
    "UploadResult": {"type": "object", "required": ["userId", "settingIds", "fingerprint"]},
    "Label": {"type": "object", "required": ["id", "name", "type"], "properties": {
        "id": STRING, "name": STRING, "type": {"enum": ["manual", "filter"]}, "memberCount": {"type": "integer"}}},
    "LabelInput": {"type": "object", "required": ["name", "type"], "properties": {
        "name": STRING, "type": {"enum": ["manual", "filter"]}, "description": STRING,
        "deviceUuids": STRINGS, "criteria": OBJECT, "sentryAttachmentEncryption": {"type": "boolean"}}},
    "DeliveryReport": {"type": "object", "required": ["installsQueued", "removalsQueued", "queued", "errors"]},
    "SettingRef": {"type": "object", "required": ["settingId"], "properties": {"settingId": STRING}},
    "SyncPolicy": {"type": "object", "required": ["id", "name", "syncIntervalMinutes"]},
    "SyncPolicyInput": {"type": "object", "required": ["name"]},
    "DeviceV2": {"type": "object", "required": ["uuid", "state", "labelIds", "pushed", "checkedInSincePush"]},
    "Wakeup": {"type": "object", "properties": {"labelId": STRING, "deviceUuids": {**STRINGS, "minItems": 1}}},
    "WakeupReport": {"type": "object", "required": ["results", "totalCount", "pushed"]},
    "Ownership": {"type": "object", "required": ["ownership"], "additionalProperties": False,
                  "properties": {"ownership": {"enum": ["company", "employee", "unknown"]}}},
    "Readiness": {"type": "object", "required": ["accounts"]},
    "ReadinessRefresh": {"type": "object", "required": ["queued", "pushed"]},
    "Declarations": {"type": "object", "required": ["deviceId", "user", "declarationsToken", "timestamp", "items"],
                     "properties": {"deviceId": STRING, "user": {"type": ["string", "null"]},
                                    "declarationsToken": STRING, "timestamp": STRING,
                                    "items": {"type": "array", "items": _ref("Declaration")}}},
    "Declaration": {"type": "object", "required": ["kind", "source", "Type", "Identifier", "ServerToken", "Payload"],
                    "properties": {"kind": {"enum": ["activation", "configuration", "asset", "management"]},
                                   "source": STRING, "Type": STRING, "Identifier": STRING, "ServerToken": STRING,
                                   "Payload": OBJECT}},
    "DeclarativeStatus": {"type": "object", "required": ["deviceId", "user", "updatedAt", "statusItems", "errors",
                                                         "declarations"], "properties": {
        "deviceId": STRING, "user": {"type": ["string", "null"]}, "updatedAt": {"type": ["number", "null"]},
        "statusItems": OBJECT, "errors": {"type": "array", "items": OBJECT},
        "declarations": {"type": "object", "required": ["activations", "configurations", "assets", "management"]},
        "history": {"type": "array", "items": {"type": "object", "required": ["receivedAt", "report"]}}}},
    "DeclarativeSync": {"type": "object", "required": ["commandUuid", "pushed"], "properties": {
        "commandUuid": STRING, "pushed": {"type": "boolean"}, "reason": {"type": ["string", "null"]}}},
    "Conflict": {"type": "object", "required": ["kind", "deviceUuid", "settingIds", "labelIds", "reason"]},
    "OpenAPI": {"type": "object", "required": ["openapi", "paths"]},
    "EnrollmentToken": {"type": "object", "required": ["id", "userId", "expiresAt", "maxUses", "uses", "revoked",
                                                       "status"], "properties": {
        "id": STRING, "name": STRING, "userId": {"type": ["string", "null"]},
        "expiresAt": {"type": ["number", "null"]}, "maxUses": {"type": ["integer", "null"]},
        "uses": {"type": "integer"}, "revoked": {"type": "boolean"}, "createdAt": {"type": "number"},
        "allowUserParameter": {"type": "boolean"},
        "status": {"enum": ["valid", "expired", "used up", "revoked"]},
        "token": {"type": "string", "description": "the secret for ?token=; only in the answer to its creation"}}},
    "EnrollmentTokenInput": {"type": "object", "additionalProperties": False, "properties": {
        "name": STRING, "userId": {"type": "string", "description": "per-user token: identities bind this user"},
        "expiresInSeconds": {"type": "number", "exclusiveMinimum": 0},
        "maxUses": {"type": "integer", "minimum": 1},
        "allowUserParameter": {"type": "boolean", "description": "a batch token whose holder may name the user "
                                                                 "with ?user= (the operator's own fleets)"}}},
}

PAGE = ["cursor", "limit"]
PARAMETERS: dict[str, Any] = {
    "cursor": {"description": "nextCursor of the previous page", "schema": STRING},
    "limit": {"description": f"page size (default {DEFAULT_LIMIT})",
              "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}},
    "state": {"description": "enrollment states to list (repeatable)", "explode": True,
              "schema": {"type": "array", "items": {"enum": ["authenticated", "enrolled", "unenrolled"]}}},
    "kind": {"description": "only settings of this kind", "schema": STRING},
    "labelId": {"description": "only this label's devices", "schema": STRING},
    "deviceUuids": {"description": "comma-separated device ids", "schema": STRING},
    "user": {"description": "a user channel of the device (its user key: UserShortName on Shared iPad); "
                            "default: the device channel", "schema": STRING},
    "history": {"description": "include the kept status reports (default true)",
                "schema": {"enum": ["true", "false"]}},
}

# (method, path, tag, summary, query parameters, request body schema, {status: response schema}).
OPERATIONS: list[tuple[str, str, str, str, list[str], str | None, dict[str, str]]] = [
    ("get", "/api/v1/ping", "v1", "Server up; devices by enrollment state", [], None, {"200": "Ping"}),
    ("get", "/api/v2/ping", "v2", "Server up; devices by enrollment state", [], None, {"200": "Ping"}),
    ("get", "/api/v1/devices", "v1", "List devices", ["state", *PAGE], None, {"200": "page:DeviceV1"}),
    ("get", "/api/v1/devices/{device_id}", "v1", "One device, its facts, queue and last push", [], None,
     {"200": "DeviceV1"}),
    ("get", "/api/v1/devices/{device_id}/commands", "v1", "A device's command queue", PAGE, None,
     {"200": "page:Command"}),
    ("get", "/api/v1/devices/{device_id}/user-channels", "v1",
     "A Shared iPad's user channels: each signed-in user's own token and PushMagic", [], None,
     {"200": "page:UserChannel"}),
    ("delete", "/api/v1/devices/{device_id}/commands/{uuid}", "v1", "Remove a queued command", [], None,
     {"200": "Deleted"}),
    ("post", "/api/v1/commands", "v1", "Queue a raw command for devices", [], "EnqueueRequest",
     {"201": "BatchResults", "207": "BatchResults"}),
    ("post", "/api/v1/push", "v1", "Push devices now", [], "DeviceIds", {"200": "BatchResults"}),
    ("get", "/api/v2/settings", "settings", "List settings", ["kind", *PAGE], None, {"200": "page:Setting"}),
    ("post", "/api/v2/settings", "settings", "Create a setting", [], "SettingInput", {"201": "Setting"}),
    ("get", "/api/v2/settings/{setting_id}", "settings", "One setting", [], None, {"200": "Setting"}),
    ("put", "/api/v2/settings/{setting_id}", "settings", "Replace a setting", [], "SettingInput",
     {"200": "Setting"}),
    ("delete", "/api/v2/settings/{setting_id}", "settings", "Delete a setting", [], None, {"200": "Deleted"}),
    ("get", "/api/v2/settings/{setting_id}/missing-certificates", "settings",
     "Users lacking a certificate the setting needs", [], None, {"200": "MissingCertificates"}),
    ("get", "/api/v2/users", "users", "List users", PAGE, None, {"200": "page:User"}),
    ("post", "/api/v2/users", "users", "Create a user", [], "User", {"201": "User"}),
    ("get", "/api/v2/users/{user_id}", "users", "One user", [], None, {"200": "User"}),
    ("put", "/api/v2/users/{user_id}", "users", "Replace a user's attributes", [], "User", {"200": "User"}),
    ("delete", "/api/v2/users/{user_id}", "users", "Delete a user and their certificates", [], None,
     {"200": "Deleted"}),
    ("put", "/api/v2/users/{user_id}/password", "users", "Set the user's portal password (/user)", [],
     "PasswordInput", {"200": "PasswordSet"}),
    ("get", "/api/v2/users/{user_id}/certificates", "users", "A user's certificates by setting", PAGE, None,
     {"200": "page:UserCertificates"}),
    ("post", "/api/v2/users/{user_id}/certificates", "users", "Upload a PKCS#12 for a user", [],
     "CertificateUpload", {"201": "UploadResult"}),
    ("put", "/api/v2/users/{user_id}/certificates/{setting_id}", "users", "Replace a user's certificate", [],
     "CertificateUpload", {"200": "UploadResult"}),
    ("delete", "/api/v2/users/{user_id}/certificates/{setting_id}", "users", "Delete a user's certificate", [],
     None, {"200": "Deleted"}),
    ("get", "/api/v2/labels", "labels", "List labels (by name)", PAGE, None, {"200": "page:Label"}),
    ("post", "/api/v2/labels", "labels", "Create a label", [], "LabelInput", {"201": "Label"}),
    ("get", "/api/v2/labels/{label_id}", "labels", "One label", [], None, {"200": "Label"}),
    ("put", "/api/v2/labels/{label_id}", "labels", "Replace a label", [], "LabelInput", {"200": "Label"}),
    ("delete", "/api/v2/labels/{label_id}", "labels", "Delete a label", [], None, {"200": "Deleted"}),
    ("post", "/api/v2/labels/{label_id}/apply", "labels", "Apply a setting to a label", [], "SettingRef",
     {"200": "DeliveryReport"}),
    ("put", "/api/v2/labels/{label_id}/apply", "labels", "Apply a setting to a label", [], "SettingRef",
     {"200": "DeliveryReport"}),
    ("post", "/api/v2/labels/{label_id}/remove", "labels", "Remove a setting from a label", [], "SettingRef",
     {"200": "DeliveryReport"}),
    ("put", "/api/v2/labels/{label_id}/remove", "labels", "Remove a setting from a label", [], "SettingRef",
     {"200": "DeliveryReport"}),
    ("get", "/api/v2/sync-policies", "sync policies", "List sync policies", PAGE, None,
     {"200": "page:SyncPolicy"}),
    ("post", "/api/v2/sync-policies", "sync policies", "Create a sync policy", [], "SyncPolicyInput",
     {"201": "SyncPolicy"}),
    ("get", "/api/v2/sync-policies/{policy_id}", "sync policies", "One sync policy", [], None,
     {"200": "SyncPolicy"}),
    ("put", "/api/v2/sync-policies/{policy_id}", "sync policies", "Replace a sync policy", [], "SyncPolicyInput",
     {"200": "SyncPolicy"}),
    ("delete", "/api/v2/sync-policies/{policy_id}", "sync policies", "Delete a sync policy", [], None,
     {"200": "Deleted"}),
    ("put", "/api/v2/devices/wakeup", "devices", "Force check-in: push devices or a label's devices", [],
     "Wakeup", {"200": "WakeupReport"}),
    ("get", "/api/v2/devices/wakeup", "devices", "Force check-in report: pushed vs checked in since",
     ["labelId", "deviceUuids"], None, {"200": "WakeupReport"}),
    ("get", "/api/v2/devices", "devices", "List devices with labels and sync policy", ["labelId", *PAGE], None,
     {"200": "page:DeviceV2"}),
    ("put", "/api/v2/devices/{device_id}/attributes", "devices", "Set a device's ownership", [], "Ownership",
     {"200": "DeviceV2"}),
    ("get", "/api/v2/devices/{device_id}/readiness", "devices", "Expected S/MIME readiness per account", [],
     None, {"200": "Readiness"}),
    ("post", "/api/v2/devices/{device_id}/readiness/refresh", "devices",
     "Ask the device for its ProfileList and CertificateList", [], None, {"202": "ReadinessRefresh"}),
    ("get", "/api/v2/devices/{device_id}/declarations", "declarative",
     "The declarations a channel is offered over DDM, with its DeclarationsToken", ["user"], None,
     {"200": "Declarations"}),
    ("get", "/api/v2/devices/{device_id}/ddm-status", "declarative",
     "What a channel reported over DDM: merged status items, declaration states, recent reports",
     ["user", "history"], None, {"200": "DeclarativeStatus"}),
    ("post", "/api/v2/devices/{device_id}/declarative-management", "declarative",
     "Queue DeclarativeManagement (Data: the current tokens) and push: the device syncs now", [], None,
     {"202": "DeclarativeSync"}),
    ("get", "/api/v2/enrollment-tokens", "enrollment", "List enrollment tokens", PAGE, None,
     {"200": "page:EnrollmentToken"}),
    ("post", "/api/v2/enrollment-tokens", "enrollment", "Create an enrollment token (per user or per batch)", [],
     "EnrollmentTokenInput", {"201": "EnrollmentToken"}),
    ("get", "/api/v2/enrollment-tokens/{token_id}", "enrollment", "One enrollment token", [], None,
     {"200": "EnrollmentToken"}),
    ("delete", "/api/v2/enrollment-tokens/{token_id}", "enrollment", "Revoke an enrollment token", [], None,
     {"200": "Deleted"}),
    ("get", "/api/v2/conflicts", "labels", "Conflicting settings per device", ["labelId", *PAGE], None,
     {"200": "page:Conflict"}),
    ("get", OPENAPI_PATH, "meta", "This document (public)", [], None, {"200": "OpenAPI"}),
]

DESCRIPTIONS = {("post", "/api/v1/commands"): ENQUEUE}


def _schema(name: str) -> dict[str, Any]:
    return _page(name.removeprefix("page:")) if name.startswith("page:") else _ref(name)


def _operation(method: str, path: str, tag: str, summary: str, query: list[str], body: str | None,
               answers: dict[str, str]) -> dict[str, Any]:
    parameters = [{"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
                  for name in re.findall(r"{(\w+)}", path)]
    parameters += [{"name": name, "in": "query", "required": False, **PARAMETERS[name]} for name in query]
    error = {"description": "failure", "content": {"application/json": {"schema": _ref("Error")}}}
    responses: dict[str, Any] = {status: {"description": "success", "content": {"application/json": {
        "schema": _schema(schema)}}} for status, schema in answers.items()}
    retry = {"Retry-After": {"description": "seconds to wait before trying again",
                             "schema": {"type": "integer", "minimum": 1}}}
    if path != OPENAPI_PATH:
        responses["429"] = {**error, "description": "too many failed logins from this address", "headers": retry}
    if method != "get":
        responses["503"] = {**error, "description": "storage is full; nothing was changed", "headers": retry}
    responses["default"] = error
    operation: dict[str, Any] = {"tags": [tag], "summary": summary, "operationId": _operation_id(method, path),
                                 "parameters": parameters, "responses": responses}
    if (method, path) in DESCRIPTIONS:
        operation["description"] = DESCRIPTIONS[(method, path)]
    if body:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
    if path == OPENAPI_PATH:
        operation["security"] = []
    return operation


def _operation_id(method: str, path: str) -> str:
    words = re.sub(r"[{}]", "", path.removeprefix("/api/")).replace("-", "_").split("/")
    return method + "".join(word.replace("_", " ").title().replace(" ", "") for word in words)


def document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for operation in OPERATIONS:
        paths.setdefault(operation[1], {})[operation[0]] = _operation(*operation)
    return {
        "openapi": "3.1.0",
        "info": {"title": "mdmsim admin API", "version": "2.0", "description": INTRO},
        "servers": [{"url": "/"}],
        "security": [{"basic": []}],
        "paths": paths,
        "components": {"schemas": SCHEMAS, "securitySchemes": {"basic": {"type": "http", "scheme": "basic"}}},
    }


def openapi_route() -> Route:
    @public
    def serve(request: Request) -> tuple[int, Any]:
        return 200, document()

    return (b"GET", re.compile(re.escape(OPENAPI_PATH)), serve)
