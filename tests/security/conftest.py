"""The three services for cross-service security tests.

The catalog and collections services run over real HTTP on 127.0.0.1
(the ``services`` fixture), because the collections and sharing services
call them. Tests send their own requests through Flask test clients.
"""

from __future__ import annotations

import pytest

from tests.sharing.conftest import services, sharing, sharing_app  # noqa: F401


@pytest.fixture
def collections(services):  # noqa: F811
    from services.collections.app import create_app

    app = create_app()
    app.config["TESTING"] = True
    return app.test_client()
