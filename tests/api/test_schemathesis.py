"""Property-based API tests generated from each service's OpenAPI document.

Every generated request must get a response that is not a server error and
that matches the documented schema, whether the input is valid or not.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from services.catalog.app import create_app as create_catalog

catalog_schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", create_catalog())

CHECKS = [not_a_server_error, response_schema_conformance]
LIMITS = settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)


@catalog_schema.parametrize()
@LIMITS
def test_catalog_api(case, owner):
    case.call_and_validate(headers=owner.headers, checks=CHECKS)


from services.collections.app import create_app as create_collections  # noqa: E402
from services.sharing.app import create_app as create_sharing  # noqa: E402

collections_schema = schemathesis.openapi.from_wsgi(
    "/api/v1/openapi.json", create_collections()
)
sharing_schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", create_sharing())


@collections_schema.parametrize()
@LIMITS
def test_collections_api(case, owner, services):
    case.call_and_validate(headers=owner.headers, checks=CHECKS)


@sharing_schema.parametrize()
@LIMITS
def test_sharing_api(case, owner, services):
    case.call_and_validate(headers=owner.headers, checks=CHECKS)
