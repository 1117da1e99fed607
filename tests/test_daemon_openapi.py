"""runtime/daemon/openapi.json describes the daemon's real routes, statuses and error kinds.

The document is hand-kept; these tests compare it with the code (the routes of
``build_app``, ``errors._STATUSES``, the error classes, the option structs) so
that it cannot drift silently.  Each check is a function returning a list of
problems, and ``test_checks_catch_drift`` feeds them broken copies of the
document to show they do fail.
"""

from __future__ import annotations

import copy
import json
import re
import types
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import trio
from starlette.routing import Route

import wasmhive.runtime.daemon as daemon_package
from wasmhive.actors.errors import WasmhiveError
from wasmhive.runtime.daemon import errors as daemon_errors
from wasmhive.runtime.daemon.app import DaemonApp
from wasmhive.runtime.daemon.config import DaemonConfig, FunctionOptions, ServerConfig
from wasmhive.runtime.daemon.metrics import DaemonMetrics
from wasmhive.runtime.daemon.store import VersionRecord

DOC_PATH = Path(daemon_package.__file__).with_name("openapi.json")
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
BENCH_ONLY = "x-wasmhive-only-when"


def load_doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DOC_PATH.read_text(encoding="utf-8"))
    return doc


def make_app(*, bench_endpoint: bool) -> DaemonApp:
    """A real DaemonApp (real config and metrics); the service is never called by these tests."""
    config = DaemonConfig(server=ServerConfig(bench_endpoint=bench_endpoint, access_log=False))
    metrics = DaemonMetrics(lambda: [], lambda: {"memory_hits": 0, "disk_hits": 0, "compiles": 0, "rebuilt": 0})
    return DaemonApp(types.SimpleNamespace(), config, metrics)  # type: ignore[arg-type]


def app_routes(app: DaemonApp) -> dict[str, set[str]]:
    """{OpenAPI-style path: lower-case methods} of the Starlette app (HEAD, which Starlette adds to GET, left out)."""
    routes: dict[str, set[str]] = {}
    for route in app.asgi.routes:
        assert isinstance(route, Route), route
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)  # {version:int} -> {version}
        methods = {m.lower() for m in route.methods or ()} - {"head"}
        routes.setdefault(path, set()).update(methods)
    return routes


def doc_routes(doc: dict[str, Any]) -> dict[str, set[str]]:
    return {path: set(item) & HTTP_METHODS for path, item in doc.get("paths", {}).items()}


def error_kinds_in_code() -> dict[str, int]:
    """Every error kind the daemon can answer with (the mapped classes and their subclasses) -> status."""
    kinds: dict[str, int] = {}
    pending: list[type[WasmhiveError]] = [cls for cls, _ in daemon_errors._STATUSES]
    while pending:
        cls = pending.pop()
        # only wasmhive's own classes: tests may define subclasses of their own in this process
        if cls.__module__.startswith("wasmhive.") and not cls.__name__.startswith("_"):
            kinds[cls.__name__] = daemon_errors.status_of(cls("probe"))
        pending.extend(cls.__subclasses__())
    return kinds


# --- checks: each returns a list of problems --------------------------------------------


def route_problems(doc: dict[str, Any], app: DaemonApp, *, bench_endpoint: bool) -> list[str]:
    problems = []
    in_app = app_routes(app)
    in_doc = doc_routes(doc)
    for path, methods in sorted(in_app.items()):
        if path not in in_doc:
            problems.append(f"route {path} is not in the document")
        elif methods != in_doc[path]:
            problems.append(f"{path}: app methods {sorted(methods)} != document methods {sorted(in_doc[path])}")
    for path in sorted(set(in_doc) - set(in_app)):
        if bench_endpoint or BENCH_ONLY not in doc["paths"][path]:
            problems.append(f"document path {path} is not a route of the app")
    return problems


def bench_problems(doc: dict[str, Any], plain_app: DaemonApp, bench_app: DaemonApp) -> list[str]:
    """Routes that exist only with server.bench_endpoint = true are marked so, and only those."""
    conditional = set(app_routes(bench_app)) - set(app_routes(plain_app))
    marked = {path for path, item in doc.get("paths", {}).items() if BENCH_ONLY in item}
    problems = []
    if conditional != marked:
        problems.append(f"bench-only routes {sorted(conditional)} != paths marked {BENCH_ONLY} {sorted(marked)}")
    for path in marked:
        if "bench_endpoint" not in doc["paths"][path][BENCH_ONLY]:
            problems.append(f"{path}: {BENCH_ONLY} does not name server.bench_endpoint")
    return problems


def status_problems(doc: dict[str, Any]) -> list[str]:
    """Every status of errors._STATUSES is described: in the Error schema's text and as a response somewhere."""
    problems = []
    error = doc["components"]["schemas"]["Error"]
    described = error.get("description", "")
    answered = {
        code
        for item in doc["paths"].values()
        for method, operation in item.items()
        if method in HTTP_METHODS
        for code in operation.get("responses", {})
    }
    for cls, status in daemon_errors._STATUSES:
        if not re.search(rf"\|\s*{status}\s*\|[^\n]*\b{cls.__name__}\b", described):
            problems.append(f"the Error description has no table row '| {status} | ... {cls.__name__} ...'")
        if str(status) not in answered:
            problems.append(f"no operation documents status {status} ({cls.__name__})")
    return problems


def kind_problems(doc: dict[str, Any]) -> list[str]:
    """The Error schema lists exactly the kinds of the code, each with the status the code gives it."""
    problems = []
    prop = doc["components"]["schemas"]["Error"]["properties"]["error"]
    listed = prop.get("enum", [])
    statuses = prop.get("x-wasmhive-statuses", {})
    code = error_kinds_in_code()
    if len(listed) != len(set(listed)):
        problems.append("the kinds list has duplicates")
    for kind in sorted(set(code) - set(listed)):
        problems.append(f"error kind {kind} (status {code[kind]}) is missing from the Error schema")
    for kind in sorted(set(listed) - set(code)):
        problems.append(f"the Error schema lists {kind}, which is no error class of the daemon")
    for kind, status in sorted(code.items()):
        if kind in listed and statuses.get(kind) != status:
            problems.append(f"{kind}: the document says status {statuses.get(kind)}, the code {status}")
    if set(statuses) != set(listed):
        problems.append("x-wasmhive-statuses and the kinds list name different kinds")
    return problems


def ref_problems(doc: dict[str, Any]) -> list[str]:
    """Every local $ref points at something in the document."""
    problems = []

    def resolve(pointer: str) -> bool:
        node: Any = doc
        for part in pointer.removeprefix("#/").split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            target = node.get("$ref")
            if isinstance(target, str) and not (target.startswith("#/") and resolve(target)):
                problems.append(f"{where}: unresolved $ref {target}")
            for key, value in node.items():
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}/{i}")

    walk(doc, "#")
    return problems


def schema_field_problems(doc: dict[str, Any]) -> list[str]:
    """The option and version schemas have the fields of the structs the daemon decodes and encodes."""
    problems = []
    schemas = doc["components"]["schemas"]
    _, components = msgspec.json.schema_components(
        [FunctionOptions, VersionRecord], ref_template="#/components/schemas/{name}"
    )
    generated = json.loads(msgspec.json.encode(components))  # tuples as lists, as in the document
    for name, schema in generated.items():
        if name not in schemas:
            problems.append(f"schema {name} is missing")
            continue
        want = set(schema.get("properties", {}))
        have = set(schemas[name].get("properties", {}))
        if want != have:
            problems.append(f"schema {name}: fields {sorted(have)} != the struct's {sorted(want)}")
        documented = schemas[name].get("properties", {})
        for field, spec in schema.get("properties", {}).items():
            if "default" in spec and documented.get(field, {}).get("default") != spec["default"]:
                problems.append(f"schema {name}.{field}: default differs from the struct's {spec['default']!r}")
    return problems


def security_problems(doc: dict[str, Any]) -> list[str]:
    """The bearer token is on the admin routes (the ones that call _authorize) and on no other."""
    admin = {
        ("/v1/functions/{name}", "post"),
        ("/v1/functions/{name}", "delete"),
        ("/v1/functions/{name}/versions/{version}", "delete"),
        ("/v1/functions/{name}/aliases/{alias}", "put"),
        ("/v1/functions/{name}/aliases/{alias}", "delete"),
    }
    problems = []
    if doc.get("security"):
        problems.append("a document-wide security requirement would cover the invoke routes")
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            schemes = {name for req in operation.get("security", []) for name in req}
            if ((path, method) in admin) != ("adminToken" in schemes):
                wrong = "missing" if (path, method) in admin else "on a route that needs no token"
                problems.append(f"{method.upper()} {path}: adminToken security is {wrong}")
            if (path, method) in admin and "401" not in operation.get("responses", {}):
                problems.append(f"{method.upper()} {path}: no 401 response")
    return problems


# --- tests ------------------------------------------------------------------------------


def test_document_is_openapi_3_1_json() -> None:
    doc = load_doc()
    assert re.fullmatch(r"3\.1\.\d+", doc["openapi"]), doc.get("openapi")
    assert doc["info"]["title"] and doc["info"]["version"]
    assert doc["paths"], "no paths"
    assert ref_problems(doc) == []


def test_every_route_is_documented_with_its_methods() -> None:
    doc = load_doc()
    assert route_problems(doc, make_app(bench_endpoint=True), bench_endpoint=True) == []
    assert route_problems(doc, make_app(bench_endpoint=False), bench_endpoint=False) == []


def test_bench_endpoint_is_marked_conditional() -> None:
    assert bench_problems(load_doc(), make_app(bench_endpoint=False), make_app(bench_endpoint=True)) == []


def test_every_status_is_described() -> None:
    assert status_problems(load_doc()) == []


def test_error_kinds_match_the_error_classes() -> None:
    assert kind_problems(load_doc()) == []


def test_schemas_match_the_structs() -> None:
    assert schema_field_problems(load_doc()) == []


def test_admin_token_only_on_admin_routes() -> None:
    assert security_problems(load_doc()) == []


def test_served_document_is_the_file() -> None:
    async def fetch() -> httpx.Response:
        transport = httpx.ASGITransport(app=make_app(bench_endpoint=False).asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://daemon") as client:
            return await client.get("/openapi.json")

    response = trio.run(fetch)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == load_doc()


def test_document_validates_with_openapi_spec_validator() -> None:
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(load_doc())


def test_checks_catch_drift() -> None:
    """Each check reports a broken copy of the document: the tests above can fail."""
    doc = load_doc()
    bench, plain = make_app(bench_endpoint=True), make_app(bench_endpoint=False)

    missing = copy.deepcopy(doc)
    del missing["paths"]["/v1/stream/{target}"]
    assert any("/v1/stream/{target}" in p for p in route_problems(missing, bench, bench_endpoint=True))

    extra = copy.deepcopy(doc)
    extra["paths"]["/v1/functions"]["post"] = extra["paths"]["/v1/functions"]["get"]
    extra["paths"]["/v1/nothing"] = {"get": extra["paths"]["/healthz"]["get"]}
    found = route_problems(extra, bench, bench_endpoint=True)
    assert any("/v1/functions:" in p for p in found) and any("/v1/nothing" in p for p in found)

    unmarked = copy.deepcopy(doc)
    del unmarked["paths"]["/v1/bare"][BENCH_ONLY]
    assert route_problems(unmarked, plain, bench_endpoint=False)
    assert bench_problems(unmarked, plain, bench)

    table = copy.deepcopy(doc)
    error = table["components"]["schemas"]["Error"]
    error["description"] = error["description"].replace("| 409 |", "| 418 |")
    assert any("409" in p for p in status_problems(table))

    kinds = copy.deepcopy(doc)
    prop = kinds["components"]["schemas"]["Error"]["properties"]["error"]
    prop["enum"].remove("CircuitOpen")
    prop["enum"].append("Teapot")
    prop["x-wasmhive-statuses"]["GuestError"] = 400
    found = kind_problems(kinds)
    assert any("CircuitOpen" in p for p in found)
    assert any("Teapot" in p for p in found)
    assert any("GuestError" in p for p in found)

    refs = copy.deepcopy(doc)
    refs["components"]["schemas"].pop("Weights")
    assert ref_problems(refs)

    fields = copy.deepcopy(doc)
    fields["components"]["schemas"]["PoolPolicy"]["properties"].pop("max_size")
    fields["components"]["schemas"]["ServerOnly"] = {}
    fields["components"]["schemas"]["BulkheadPolicy"]["properties"]["max_concurrent"]["default"] = 7
    found = schema_field_problems(fields)
    assert any("PoolPolicy" in p for p in found) and any("max_concurrent" in p for p in found)

    security = copy.deepcopy(doc)
    security["paths"]["/v1/invoke/{target}"]["post"]["security"] = [{"adminToken": []}]
    del security["paths"]["/v1/functions/{name}"]["post"]["security"]
    assert len(security_problems(security)) == 2
