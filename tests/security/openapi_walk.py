"""Walk every operation of a service's OpenAPI document and check who may call it.

The table of operations comes from the document at test time, so an endpoint
added later is checked without editing the tests. Each operation is
classified as public, internal (service to service, guarded by the internal
secret) or a member operation with a minimum role. An operation the walker
cannot classify or cannot fill with real values is reported as a problem,
never skipped.
"""

from __future__ import annotations

import io
import itertools
import re
from dataclasses import dataclass, field
from urllib.parse import quote

from PIL import Image

HTTP_METHODS = ("get", "post", "put", "patch", "delete")
DOCUMENTED_METHODS = {"get", "post", "put", "patch", "delete", "head", "options", "trace"}
INTERNAL_PREFIX = "/api/v1/internal/"
OPENAPI_PATH = "/api/v1/openapi.json"

# Flask rules outside /api/ that every service serves without a token.
OPERATIONAL_RULES = {"/health", "/ready", "/metrics", "/static/<path:filename>"}


def small_jpeg(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (48, 32), color).save(buffer, "JPEG")
    return buffer.getvalue()


def error_shape_problem(response) -> str | None:
    """Describe how the response breaks the ``{"error": {"code", "message"}}`` shape."""
    body = response.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        return f"body is not a JSON error object: {response.get_data(as_text=True)[:200]!r}"
    error = body["error"]
    if not isinstance(error.get("code"), str) or not isinstance(error.get("message"), str):
        return f"error object lacks a string code or message: {error!r}"
    return None


@dataclass(frozen=True)
class Operation:
    """One documented operation: its HTTP method, path template and OpenAPI object."""

    service: str
    method: str
    template: str
    spec: dict

    @property
    def key(self) -> tuple[str, str]:
        return (self.method, self.template)

    @property
    def label(self) -> str:
        return f"{self.service}: {self.method} {self.template}"

    def required_query(self) -> list[str]:
        return [
            parameter["name"]
            for parameter in self.spec.get("parameters", [])
            if parameter.get("in") == "query" and parameter.get("required")
        ]


@dataclass
class ServiceRules:
    """The hand-written part of a service's access table.

    Every GET needs the viewer role and every other method the editor role,
    unless the operation is listed here.
    """

    name: str
    # Operations that need no token at all.
    public: set[tuple[str, str]] = field(default_factory=set)
    # Writes that a viewer may call.
    viewer_writes: set[tuple[str, str]] = field(default_factory=set)
    # Operations that need the admin role.
    admin: set[tuple[str, str]] = field(default_factory=set)
    # Flask rules outside /api/ that are not member endpoints, such as the
    # public pages of share links.
    public_rules: set[str] = field(default_factory=set)


@dataclass
class Classified:
    """Operations of one service, sorted by who may call them, and what did not fit."""

    member: list[Operation] = field(default_factory=list)
    internal: list[Operation] = field(default_factory=list)
    public: list[Operation] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def documented_operations(service: str, client) -> tuple[list[Operation], list[str]]:
    """Return every operation of the service's OpenAPI document, and any problems."""
    response = client.get(OPENAPI_PATH)
    assert response.status_code == 200, f"{service}: {OPENAPI_PATH} returned {response.status_code}"
    operations, problems = [], []
    for template, item in response.json["paths"].items():
        for method, spec in item.items():
            if method not in DOCUMENTED_METHODS:
                continue
            if method not in HTTP_METHODS:
                problems.append(f"{service}: {method.upper()} {template}: method not walked")
                continue
            operations.append(Operation(service, method.upper(), template, spec))
    return operations, problems


def classify(rules: ServiceRules, operations: list[Operation]) -> Classified:
    """Sort operations into member, internal and public ones; list what does not fit."""
    result = Classified()
    keys = {operation.key for operation in operations}
    for name, listed in (
        ("public", rules.public),
        ("viewer_writes", rules.viewer_writes),
        ("admin", rules.admin),
    ):
        for method, template in sorted(listed - keys):
            result.problems.append(
                f"{rules.name}: {method} {template} is in {name} but not in the OpenAPI document"
            )
    for operation in operations:
        declares_no_auth = operation.spec.get("security") == []
        if not operation.template.startswith("/api/"):
            # Public share pages and other pages outside the API belong in
            # Flask routes, not in the members' document.
            result.problems.append(f"{operation.label}: documented outside /api/")
        elif operation.key in rules.public:
            if not declares_no_auth:
                result.problems.append(f"{operation.label}: public but documented with a token")
            result.public.append(operation)
        elif operation.template.startswith(INTERNAL_PREFIX):
            if not declares_no_auth:
                result.problems.append(
                    f"{operation.label}: internal but documented with a bearer token; "
                    "add @blp.doc(security=[])"
                )
            result.internal.append(operation)
        elif declares_no_auth:
            result.problems.append(
                f"{operation.label}: documented without a token but neither public nor internal"
            )
        else:
            result.member.append(operation)
    return result


def minimum_role(rules: ServiceRules, operation: Operation) -> str:
    if operation.key in rules.admin:
        return "admin"
    if operation.method == "GET" or operation.key in rules.viewer_writes:
        return "viewer"
    return "editor"


def undocumented_rules(app, rules: ServiceRules, operations: list[Operation]) -> list[str]:
    """Name the app's Flask rules that no document or rule list accounts for.

    A rule under /api/ must be in the OpenAPI document, so that the walk
    reaches it. A rule outside /api/ must be an operational endpoint or one
    of the service's listed public rules.
    """
    documented = {re.sub(r"\{(\w+)\}", r"<\1>", op.template) for op in operations}
    problems = []
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"<\1>", rule.rule)
        if path.startswith("/api/"):
            if path != OPENAPI_PATH and path not in documented:
                problems.append(f"{rules.name}: {rule.rule} is served but not documented")
        elif rule.rule not in OPERATIONAL_RULES and rule.rule not in rules.public_rules:
            problems.append(
                f"{rules.name}: {rule.rule} is served outside /api/ and is not a known public rule"
            )
    return problems


def fill_path(template: str, values: dict[str, list[str]]) -> list[str]:
    """Return every concrete path made from ``values`` for the template's parameters."""
    names = re.findall(r"\{(\w+)\}", template)
    paths = []
    for combination in itertools.product(*(values[name] for name in names)):
        path = template
        for name, value in zip(names, combination):
            path = path.replace("{" + name + "}", quote(value, safe="@"))
        paths.append(path)
    return paths


def missing_inputs(
    operation: Operation,
    path_values: dict[str, list[str]],
    query_values: dict[str, str],
    bodies: dict[tuple[str, str], dict],
) -> list[str]:
    """Name the inputs the walker lacks to call an operation with valid values."""
    missing = [
        f"path parameter {name}"
        for name in re.findall(r"\{(\w+)\}", operation.template)
        if name not in path_values
    ]
    missing += [
        f"query parameter {name}" for name in operation.required_query() if name not in query_values
    ]
    if "requestBody" in operation.spec and operation.key not in bodies:
        missing.append("request body")
    return missing


def call(client, method: str, path: str, headers=None, body=None, query=None):
    kwargs = {"headers": headers or {}}
    if body is not None:
        kwargs["json"] = body
    if query:
        kwargs["query_string"] = query
    response = getattr(client, method.lower())(path, **kwargs)
    # Read a streamed body to its end and close it, so that its request
    # context, kept by ``stream_with_context``, is popped before the next call.
    response.get_data()
    response.close()
    return response
