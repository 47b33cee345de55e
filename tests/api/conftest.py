"""The catalog and collections services over real HTTP, for API-wide tests."""

from tests.sharing.conftest import services  # noqa: F401
