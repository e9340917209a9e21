"""The OpenAPI document matches the routes actually mounted, and docs/api.md is generated from it and current.

Every mounted route is documented with the query parameters its handler accepts, and every documented one exists.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from server_kit import MemoryHTTP, make_server

from mdm_server.web.json_api import JsonAPI, query_params
from mdm_server.web.openapi import document

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mounted(tmp_path_factory):
    server = make_server(tmp_path_factory.mktemp("openapi"))
    api = server.root.children[b"api"]
    assert isinstance(api, JsonAPI)
    yield server, api
    server.stopService()


def _templates(pattern: str) -> list[str]:
    """The route's regex as OpenAPI path templates (`v[12]` is two paths)."""
    path = re.sub(r"\(\?P<(\w+)>\[\^/\]\+\)", r"{\1}", pattern).replace("\\", "")
    if "v[12]" in path:
        return [path.replace("v[12]", "v1"), path.replace("v[12]", "v2")]
    return [path]


def _mounted_operations(api: JsonAPI) -> dict[tuple[str, str], frozenset[str]]:
    return {(method.decode().lower(), path): query_params(handler)
            for method, pattern, handler in api.routes for path in _templates(pattern.pattern)}


def _documented_operations() -> dict[tuple[str, str], frozenset[str]]:
    out = {}
    for path, operations in document()["paths"].items():
        for method, operation in operations.items():
            names = frozenset(p["name"] for p in operation["parameters"] if p["in"] == "query")
            out[(method, path)] = names
    return out


def test_every_mounted_route_is_documented_and_every_documented_route_is_mounted(mounted):
    _, api = mounted
    assert set(_mounted_operations(api)) == set(_documented_operations())


def test_documented_query_parameters_are_the_ones_each_handler_accepts(mounted):
    _, api = mounted
    assert _mounted_operations(api) == _documented_operations()


def test_path_parameters_are_declared(mounted):
    for path, operations in document()["paths"].items():
        for operation in operations.values():
            declared = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
            assert declared == set(re.findall(r"{(\w+)}", path)), path


def test_the_server_serves_the_same_document(mounted):
    server, _ = mounted
    response = MemoryHTTP(server.http).request("GET", "/api/openapi.json", b"", {})
    assert response.status == 200 and json.loads(response.body) == json.loads(json.dumps(document()))


def test_every_schema_reference_resolves():
    doc = document()
    refs = set(re.findall(r'"#/components/schemas/(\w+)"', json.dumps(doc)))
    assert refs <= set(doc["components"]["schemas"])


def test_docs_api_md_is_generated_from_the_document_and_current():
    generated = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_api_docs.py"), "--stdout"],
                               capture_output=True, text=True, check=True, cwd=ROOT).stdout
    committed = (ROOT / "docs" / "api.md").read_text()
    assert committed == generated, "docs/api.md is stale: run python tools/gen_api_docs.py"
