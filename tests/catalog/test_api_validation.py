"""Bad input to the catalog API gets a 4xx JSON error that names the field.

The body and query-parameter checks are built from the OpenAPI document, so a
field added later gets the same checks. Inputs the document cannot describe
(unknown ids, cursors, conflicts) are listed by hand.
"""

from __future__ import annotations

import base64
import json
import re
from datetime import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.catalog.helpers import INLINE_HOST, connect, run_active_scan

HTTP_METHODS = ("get", "post", "put", "patch", "delete")
UNKNOWN_ID = "0123456789abcdef0123456789abcdef"
FUZZ_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def encode_cursor(values) -> str:
    """Encode a cursor the way the API does, so tests can forge its contents."""
    raw = json.dumps(values).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def rejection_problem(response, field: str | None) -> str | None:
    """Describe how ``response`` fails to be a 4xx JSON error naming ``field``.

    With ``field`` None only the status and the error shape are checked.
    """
    text = response.get_data(as_text=True)[:300]
    if not 400 <= response.status_code < 500:
        return f"status {response.status_code}, expected 4xx: {text}"
    body = response.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        return f"body is not a JSON error object: {text}"
    error = body["error"]
    if not isinstance(error.get("code"), str) or not isinstance(
        error.get("message"), str
    ):
        return f"error lacks a string code or message: {error}"
    fields = error.get("fields") or {}
    if field is not None and field not in fields and field not in error["message"]:
        return f"error does not name {field!r}: {error}"
    return None


def assert_rejected(response, field: str) -> None:
    problem = rejection_problem(response, field)
    assert problem is None, problem


def assert_error_shape(response) -> None:
    """Assert a status below 500 and, for an error status, the JSON error shape."""
    text = response.get_data(as_text=True)[:300]
    assert response.status_code < 500, text
    if response.status_code >= 400:
        error = response.get_json(silent=True)["error"]
        assert isinstance(error["code"], str), error
        assert isinstance(error["message"], str), error


@pytest.fixture
def world(owner, drive_factory) -> dict:
    """Ids of one scanned drive, its file, its group and a second member."""
    group = owner.post("/api/v1/groups", json={"name": "Crew"})
    assert group.status_code == 201, group.json
    editor = owner.add_member("crew-editor@example.com", "editor")
    root = drive_factory("field", {"day1/take.jpg": b"\xff\xd8\xff" + b"x" * 500})
    drive = connect(owner, root, group="Crew")
    scan = run_active_scan(owner, drive)
    file_id = owner.get("/api/v1/files").json["items"][0]["id"]
    export = owner.post("/api/v1/exports", json={"file_ids": [file_id]})
    assert export.status_code == 202, export.json
    return {
        "owner": owner,
        "ref": drive["id"],
        "drive_name": drive["name"],
        "volume_id": drive["volume_id"],
        "group_ref": "Crew",
        "file_id": file_id,
        "scan_id": scan["id"],
        "user_id": editor.user_id,
        "email": owner.email,
        "export_id": export.json["id"],
        "org_id": owner.org_id,
    }


def valid_bodies(world: dict) -> dict[tuple[str, str], dict]:
    """A body each write operation accepts, for changing one field at a time."""
    return {
        ("POST", "/api/v1/orgs"): {"name": "Gamma", "email": "gamma@example.com"},
        ("POST", "/api/v1/members"): {"email": "new@example.com", "role": "viewer"},
        ("PATCH", "/api/v1/members/{user_id}"): {"role": "viewer"},
        ("POST", "/api/v1/groups"): {"name": "Fresh"},
        ("PATCH", "/api/v1/groups/{group_ref}"): {"name": "Crew2"},
        ("POST", "/api/v1/groups/{group_ref}/members"): {
            "email": "crew-editor@example.com"
        },
        ("POST", "/api/v1/sources"): {
            "volume_id": "fresh-volume",
            "mount_path": "/mnt/fresh",
            "host": INLINE_HOST,
        },
        ("PATCH", "/api/v1/sources/{ref}"): {"name": "field-renamed"},
        ("POST", "/api/v1/files/lookup"): {"ids": [world["file_id"]]},
        ("POST", "/api/v1/internal/introspect"): {"token": "arc_unknown"},
        ("POST", "/api/v1/exports"): {"file_ids": [world["file_id"]]},
        ("POST", "/api/v1/internal/exports"): {
            "file_ids": [world["file_id"]],
            "org_id": world["org_id"],
            "user_id": world["user_id"],
        },
    }


def spec_operations(client) -> list[tuple[str, str, dict]]:
    spec = client.get("/api/v1/openapi.json").json
    operations = []
    for path, item in spec["paths"].items():
        for method in HTTP_METHODS:
            if method in item:
                operations.append((method.upper(), path, item[method]))
    return operations, spec["components"]["schemas"]


def body_schema(operation: dict, schemas: dict) -> dict | None:
    content = operation.get("requestBody", {}).get("content", {})
    schema = content.get("application/json", {}).get("schema")
    if schema is None:
        return None
    return schemas[schema["$ref"].rsplit("/", 1)[-1]]


def concrete_path(template: str, world: dict) -> str:
    return re.sub(r"\{(\w+)\}", lambda match: str(world[match.group(1)]), template)


def invalid_values(schema: dict) -> list[tuple[str, object]]:
    """Return (description, value) pairs that break the property ``schema``."""
    kind = schema.get("type")
    values = []
    if kind == "string":
        values.append(("a number", 12345))
        if not schema.get("nullable") and schema.get("default", "") is not None:
            values.append(("null", None))
    elif kind == "array":
        values.append(("a string", "not-a-list"))
    elif kind == "integer":
        values.append(("text", "abc"))
    elif kind == "boolean":
        values.append(("text", "not-a-boolean"))
    if "maxLength" in schema:
        values.append(("too long", "x" * (schema["maxLength"] + 1)))
    if schema.get("minLength", 0) >= 1:
        values.append(("empty", ""))
    if "enum" in schema:
        values.append(("not a choice", "not-a-choice"))
    if schema.get("format") == "email":
        values.append(("not an email", "not-an-email"))
    if "minItems" in schema:
        values.append(("too few items", []))
    if "maxItems" in schema:
        values.append(("too many items", ["a"] * (schema["maxItems"] + 1)))
    if "maxLength" in schema.get("items", {}):
        values.append(("an item too long", ["x" * (schema["items"]["maxLength"] + 1)]))
    return values


def test_every_body_field_is_validated(world):
    owner = world["owner"]
    operations, schemas = spec_operations(owner.client)
    bodies = valid_bodies(world)
    problems = []
    for method, template, operation in operations:
        schema = body_schema(operation, schemas)
        if schema is None:
            continue
        assert (method, template) in bodies, f"add a valid body for {method} {template}"
        path = concrete_path(template, world)
        base = bodies[(method, template)]

        cases = [
            ("unexpected_field", "an unknown field", {**base, "unexpected_field": 1})
        ]
        for name in schema.get("required", []):
            without = {key: value for key, value in base.items() if key != name}
            cases.append((name, "missing", without))
        for name, property_schema in schema["properties"].items():
            for description, value in invalid_values(property_schema):
                cases.append((name, description, {**base, name: value}))

        for field, description, body in cases:
            response = getattr(owner, method.lower())(path, json=body)
            problem = rejection_problem(response, field)
            if problem:
                problems.append(
                    f"{method} {path} with {field} {description}: {problem}"
                )
    assert problems == [], "\n".join(problems)


def query_operations(world):
    """Yield ``(method, path, query parameters)`` of each documented operation that has some."""
    operations, _ = spec_operations(world["owner"].client)
    for method, template, operation in operations:
        parameters = [p for p in operation.get("parameters", []) if p["in"] == "query"]
        if parameters:
            yield method, concrete_path(template, world), parameters


def test_every_query_param_is_validated(world):
    owner = world["owner"]
    problems = []
    checked = 0
    for method, path, parameters in query_operations(world):
        for parameter in parameters:
            name, schema = parameter["name"], parameter["schema"]
            cases = []
            if schema.get("type") == "integer":
                cases.append(("text", "abc"))
                cases.append(("a fraction", "1.5"))
            if "minimum" in schema:
                cases.append(("below the minimum", str(schema["minimum"] - 1)))
            if "maximum" in schema:
                cases.append(("above the maximum", str(schema["maximum"] + 1)))
                cases.append(("huge", str(10**30)))
            if "maxLength" in schema:
                cases.append(("too long", "x" * (schema["maxLength"] + 1)))
            if "enum" in schema:
                cases.append(("not a choice", "not-a-choice"))
            if schema.get("format") == "date-time":
                cases.append(("not a date", "yesterday"))
            if name == "cursor":
                cases.append(("not base64", "!!!"))
                cases.append(("not JSON", encode_cursor("x")[:-2] + "zz"))
                cases.append(("the wrong length", encode_cursor(["a", "b", "c", "d"])))
            for description, value in cases:
                checked += 1
                response = getattr(owner, method.lower())(
                    path, query_string={name: value}
                )
                problem = rejection_problem(response, name)
                if problem:
                    problems.append(f"{method} {path}?{name} {description}: {problem}")
    assert checked > 30, "the OpenAPI document lists too few query parameters"
    assert problems == [], "\n".join(problems)


def test_unknown_query_param_is_rejected(world):
    owner = world["owner"]
    problems = []
    checked = 0
    for method, path, _parameters in query_operations(world):
        checked += 1
        # A misspelt filter, such as "stat" for "state".
        response = getattr(owner, method.lower())(path, query_string={"stat": "missing"})
        problem = rejection_problem(response, "stat")
        if problem:
            problems.append(f"{method} {path}?stat: {problem}")
    assert checked >= 5, "the OpenAPI document lists too few operations with query parameters"
    assert problems == [], "\n".join(problems)


def test_writes_reject_malformed_bodies(world):
    owner = world["owner"]
    operations, schemas = spec_operations(owner.client)
    problems = []
    for method, template, operation in operations:
        schema = body_schema(operation, schemas)
        if schema is None:
            continue
        path = concrete_path(template, world)
        send = getattr(owner, method.lower())

        broken = send(path, data="{not json", content_type="application/json")
        if problem := rejection_problem(broken, "json"):
            problems.append(f"{method} {path} with a non-JSON body: {problem}")
        array = send(path, json=[1, 2])
        if problem := rejection_problem(array, "_schema"):
            problems.append(f"{method} {path} with a JSON array: {problem}")

        # A body of another type is rejected as such, never read as no body.
        form = send(path, data='{"name": "x"}', content_type="text/plain")
        if problem := rejection_problem(form, "Content-Type"):
            problems.append(f"{method} {path} with a text body: {problem}")
        elif form.status_code != 415:
            problems.append(f"{method} {path} with a text body: status {form.status_code}")

        required = schema.get("required", [])
        if required:
            empty = send(path, data="", content_type="application/json")
            if problem := rejection_problem(empty, required[0]):
                problems.append(f"{method} {path} with an empty body: {problem}")
    assert problems == [], "\n".join(problems)


# -- inputs the document cannot describe -------------------------------------


def bug(reason: str):
    return pytest.mark.xfail(strict=True, raises=AssertionError, reason=reason)


# (label, method, path, request keyword arguments, text the error must name)
REJECTED_CASES = [
    ("unknown file", "GET", f"/api/v1/files/{UNKNOWN_ID}", {}, UNKNOWN_ID),
    (
        "unknown thumbnail",
        "GET",
        f"/api/v1/files/{UNKNOWN_ID}/thumbnail",
        {},
        UNKNOWN_ID,
    ),
    ("unknown scan", "GET", f"/api/v1/scans/{UNKNOWN_ID}", {}, UNKNOWN_ID),
    ("unknown drive", "GET", "/api/v1/sources/no-such-drive", {}, "no-such-drive"),
    ("unknown group", "GET", "/api/v1/groups/NoSuchGroup", {}, "NoSuchGroup"),
    ("overlong file id", "GET", "/api/v1/files/" + "f" * 300, {}, "f" * 300),
    (
        "rescan unknown drive",
        "POST",
        f"/api/v1/sources/{UNKNOWN_ID}/scans",
        {},
        UNKNOWN_ID,
    ),
    (
        "verify unknown drive",
        "POST",
        f"/api/v1/sources/{UNKNOWN_ID}/verify",
        {},
        UNKNOWN_ID,
    ),
    (
        "disconnect unknown drive",
        "POST",
        f"/api/v1/sources/{UNKNOWN_ID}/disconnect",
        {},
        UNKNOWN_ID,
    ),
    (
        "unknown member",
        "PATCH",
        f"/api/v1/members/{UNKNOWN_ID}",
        {"json": {"role": "viewer"}},
        UNKNOWN_ID,
    ),
    (
        "remove unknown member",
        "DELETE",
        f"/api/v1/members/{UNKNOWN_ID}",
        {},
        UNKNOWN_ID,
    ),
    (
        "grant non member",
        "POST",
        "/api/v1/groups/Crew/members",
        {"json": {"email": "stranger@example.com"}},
        "email",
    ),
    (
        "revoke unlisted",
        "DELETE",
        "/api/v1/groups/Crew/members/stranger@example.com",
        {},
        "stranger@example.com",
    ),
    (
        "connect unknown group",
        "POST",
        "/api/v1/sources",
        {
            "json": {
                "volume_id": "v-1",
                "mount_path": "/mnt/x",
                "host": "h",
                "group": "Nope",
            }
        },
        "group",
    ),
    (
        "move to unknown group",
        "PATCH",
        "/api/v1/sources/{ref}",
        {"json": {"group": "Nope"}},
        "group",
    ),
    (
        "duplicate group",
        "POST",
        "/api/v1/groups",
        {"json": {"name": "Everyone"}},
        "name",
    ),
    (
        "duplicate member",
        "POST",
        "/api/v1/members",
        {"json": {"email": "crew-editor@example.com", "role": "viewer"}},
        "email",
    ),
    (
        "unknown folder",
        "GET",
        "/api/v1/sources/{ref}/folder",
        {"query_string": {"path": "nowhere"}},
        "nowhere",
    ),
    (
        "files cursor wrong length",
        "GET",
        "/api/v1/files",
        {"query_string": {"cursor": encode_cursor(["only-one"])}},
        "cursor",
    ),
    (
        "files cursor not a list",
        "GET",
        "/api/v1/files",
        {"query_string": {"cursor": encode_cursor({"a": 1})}},
        "cursor",
    ),
    ("NUL in q", "GET", "/api/v1/files", {"query_string": {"q": "a\x00b"}}, "q"),
    (
        "NUL in drive",
        "GET",
        "/api/v1/files",
        {"query_string": {"drive": "\x00"}},
        "drive",
    ),
    (
        "NUL in lookup ids",
        "POST",
        "/api/v1/files/lookup",
        {"json": {"ids": ["\x00"]}},
        "ids",
    ),
    (
        "NUL in group name",
        "POST",
        "/api/v1/groups",
        {"json": {"name": "bad\x00name"}},
        "name",
    ),
    # A path segment has no field name, so only the 4xx and its shape count.
    ("NUL in file id", "GET", "/api/v1/files/%00", {}, None),
    ("NUL in drive ref", "GET", "/api/v1/sources/%00", {}, None),
    (
        "negative size",
        "GET",
        "/api/v1/files",
        {"query_string": {"limit": "-5", "min_size": "-1"}},
        "min_size",
    ),
]

# Inputs that are rejected today without naming the field, or that fail with
# a 5xx. Each reason names the current behaviour and its cause.
GENERIC_DATA_ERROR = (
    "the value reaches PostgreSQL and the generic DataError handler returns "
    "422 'a value in the request is out of range or invalid', naming no field"
)
CURSOR_TYPES = (
    "decode_cursor checks only the cursor's length, so numbers reach SQL and "
    "the ProgrammingError gets a 503 'database unavailable'"
)
BUG_CASES = [
    pytest.param(
        "POST",
        "/api/v1/sources",
        {
            "json": {
                "volume_id": "v-3",
                "mount_path": "/mnt/y",
                "host": "h",
                "name": "\ud800",
            }
        },
        "name",
        id="drive-name-lone-surrogate",
    ),
    pytest.param(
        "PATCH",
        "/api/v1/groups/Crew",
        {"json": {"name": "Everyone"}},
        "name",
        id="rename-group-to-taken-name",
    ),
    pytest.param(
        "GET",
        "/api/v1/files",
        {"query_string": {"min_size": str(10**20)}},
        "min_size",
        id="size-beyond-int64",
    ),
    pytest.param(
        "GET",
        "/api/v1/files",
        {"query_string": {"cursor": encode_cursor([1, 2])}},
        "cursor",
        id="files-cursor-wrong-types",
    ),
    pytest.param(
        "GET",
        "/api/v1/sources",
        {"query_string": {"cursor": encode_cursor([1, 2])}},
        "cursor",
        id="sources-cursor-wrong-types",
    ),
    pytest.param(
        "GET",
        "/api/v1/duplicates",
        {"query_string": {"cursor": encode_cursor([5])}},
        "cursor",
        id="duplicates-cursor-wrong-type",
    ),
    pytest.param(
        "GET",
        "/api/v1/sources/{ref}/folder",
        {"query_string": {"cursor": encode_cursor([1, 2])}},
        "cursor",
        id="folder-cursor-wrong-types",
    ),
    pytest.param(
        "GET",
        "/api/v1/sources/{ref}/scans",
        {"query_string": {"cursor": encode_cursor(["99999999999999999999"])}},
        "cursor",
        id="scans-cursor-offset-beyond-int64",
    ),
    pytest.param(
        "GET",
        "/api/v1/exports",
        {"query_string": {"cursor": encode_cursor(["99999999999999999999"])}},
        "cursor",
        id="exports-cursor-offset-beyond-int64",
    ),
]


@pytest.mark.parametrize(("method", "path", "kwargs", "field"), BUG_CASES)
def test_bad_input_gives_no_server_error(world, method, path, kwargs, field):
    owner = world["owner"]
    path = path.replace("{ref}", world["ref"])
    response = getattr(owner, method.lower())(path, **kwargs)
    assert_rejected(response, field)


@pytest.mark.parametrize("action", ["scans", "verify"])
def test_offline_drive_rejects_scans(world, action):
    owner = world["owner"]
    assert owner.post(f"/api/v1/sources/{world['ref']}/disconnect").status_code == 200
    response = owner.post(f"/api/v1/sources/{world['ref']}/{action}")
    assert response.status_code == 409
    assert response.json["error"]["code"] == "drive_offline"
    assert world["drive_name"] in response.json["error"]["message"]


def test_far_future_date_matches_nothing(world):
    response = world["owner"].get(
        "/api/v1/files", query_string={"modified_after": "9999-12-31T00:00:00Z"}
    )
    assert response.status_code == 200
    assert response.json["items"] == []


def test_year_one_date_matches_everything(world):
    response = world["owner"].get(
        "/api/v1/files", query_string={"modified_after": "0001-01-01T00:00:00"}
    )
    assert response.status_code == 200
    assert response.json["items"] != []


def test_long_mount_folder_name_is_shortened(world):
    body = {
        "volume_id": "v-long",
        "mount_path": "/mnt/" + "n" * 250,
        "host": INLINE_HOST,
    }
    response = world["owner"].post("/api/v1/sources", json=body)
    assert response.status_code == 200, response.json
    assert 1 <= len(response.json["name"]) <= 200


def test_oversized_body_is_rejected(world):
    response = world["owner"].post(
        "/api/v1/files/lookup",
        data=b" " * (17 * 1024 * 1024),
        content_type="application/json",
    )
    assert response.status_code == 413
    assert_error_shape(response)


def test_deeply_nested_body_is_rejected(world):
    response = world["owner"].post(
        "/api/v1/files/lookup", data="[" * 100_000, content_type="application/json"
    )
    assert_rejected(response, "json")


# -- fuzzing -----------------------------------------------------------------

# Lone surrogates, dates before 1677 and cursors holding numbers have their own
# xfail cases above, so they are left out here to let the fuzzing find new faults.
SAFE_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=60)
# Integers past the 64-bit range too, which the API must reject with a 4xx.
WIDE_INTEGERS = st.integers(min_value=-(2**70), max_value=2**70)
# Nanoseconds since 1970 fit in a signed 64-bit integer from 1677 to 2262.
DATES = st.datetimes(min_value=datetime(1700, 1, 1), max_value=datetime(2260, 1, 1))
FILE_QUERY_VALUES = {
    "q": SAFE_TEXT,
    "type": st.sampled_from(["image", "video", "audio", "document", "other"])
    | SAFE_TEXT,
    "state": st.sampled_from(["online", "offline", "missing"]) | SAFE_TEXT,
    "media_type": SAFE_TEXT,
    "ext": SAFE_TEXT,
    "drive": SAFE_TEXT,
    "limit": WIDE_INTEGERS.map(str) | SAFE_TEXT,
    "min_size": WIDE_INTEGERS.map(str) | SAFE_TEXT,
    "max_size": WIDE_INTEGERS.map(str) | SAFE_TEXT,
    "modified_after": DATES.map(datetime.isoformat) | SAFE_TEXT,
    "modified_before": SAFE_TEXT,
    "cursor": SAFE_TEXT
    | st.lists(SAFE_TEXT, min_size=2, max_size=2).map(encode_cursor),
    "unknown": SAFE_TEXT,
}


@FUZZ_SETTINGS
@given(
    params=st.dictionaries(
        st.sampled_from(sorted(FILE_QUERY_VALUES)), st.just(None)
    ).flatmap(
        lambda keys: st.fixed_dictionaries(
            {key: FILE_QUERY_VALUES[key] for key in keys}
        )
    )
)
def test_fuzzed_file_search_never_fails(world, params):
    response = world["owner"].get("/api/v1/files", query_string=params)
    assert_error_shape(response)
    if response.status_code == 200:
        assert isinstance(response.json["items"], list)


CONNECT_VALUE = (
    SAFE_TEXT
    | st.integers()
    | st.none()
    | st.booleans()
    | st.lists(SAFE_TEXT, max_size=3)
    | st.dictionaries(SAFE_TEXT, SAFE_TEXT, max_size=2)
)
CONNECT_BODY = st.fixed_dictionaries(
    {},
    optional={
        "volume_id": SAFE_TEXT | CONNECT_VALUE,
        "mount_path": SAFE_TEXT.map(lambda text: "/mnt/" + text) | CONNECT_VALUE,
        "host": st.just(INLINE_HOST) | CONNECT_VALUE,
        "name": SAFE_TEXT | st.text(min_size=195, max_size=205) | CONNECT_VALUE,
        "group": st.sampled_from(["Crew", "Everyone"]) | CONNECT_VALUE,
        "extra": CONNECT_VALUE,
    },
)


@FUZZ_SETTINGS
@given(body=CONNECT_BODY | CONNECT_VALUE)
def test_fuzzed_connect_never_fails(world, body):
    response = world["owner"].post("/api/v1/sources", json=body)
    assert_error_shape(response)
    if response.status_code == 200:
        assert response.json["state"] == "online"
        assert response.json["volume_id"] == body["volume_id"]
