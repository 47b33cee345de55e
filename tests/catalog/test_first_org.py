"""Creating the first organization, which needs no secret, exactly once."""

from __future__ import annotations

import threading

from sqlalchemy import func, insert, select, text

from core.db import get_engine
from services.catalog.api.orgs import FIRST_ORG_LOCK
from services.catalog.models import Organization


def test_first_org_waits_for_concurrent_creation(catalog_app):
    engine = get_engine("catalog")
    outcome = {}

    def create_without_secret():
        client = catalog_app.test_client()
        outcome["response"] = client.post(
            "/api/v1/orgs", json={"name": "Second", "email": "second@example.com"}
        )

    with engine.connect() as other:
        assert other.scalar(select(func.count(Organization.id))) == 0
        # Another first request holds the lock and has found no organization.
        other.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": FIRST_ORG_LOCK})
        request = threading.Thread(target=create_without_secret)
        request.start()
        request.join(1.0)
        assert request.is_alive(), "the request did not wait for the lock"
        other.execute(insert(Organization).values(id="f" * 32, name="First"))
        other.commit()
    request.join(30)
    assert outcome["response"].status_code == 403
    assert "internal secret" in outcome["response"].json["error"]["message"]
