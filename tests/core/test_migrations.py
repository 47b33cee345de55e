"""Each service's migrations build exactly the schema its models declare."""

from __future__ import annotations

import importlib

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Index, MetaData, create_engine

from core.db import get_engine, upgrade

SERVICES = ("catalog", "collections", "sharing")


def _metadata(service: str):
    return importlib.import_module(f"services.{service}.models").Base.metadata


def _differences(engine, service: str, metadata=None) -> list:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(context, metadata or _metadata(service))


@pytest.mark.parametrize("service", SERVICES)
def test_migrations_match_models_postgresql(service):
    # The session's databases were built by the migrations.
    assert _differences(get_engine(service), service) == []


@pytest.mark.parametrize("service", SERVICES)
def test_migrations_match_models_sqlite(service, tmp_path):
    url = f"sqlite:///{tmp_path / service}.db"
    upgrade(service, url)
    engine = create_engine(url)
    try:
        assert _differences(engine, service) == []
    finally:
        engine.dispose()


def test_comparison_sees_a_missing_index():
    declared = MetaData()
    for table in _metadata("catalog").sorted_tables:
        table.to_metadata(declared)
    Index("ix_files_probe", declared.tables["files"].c.kind)
    differences = _differences(get_engine("catalog"), "catalog", declared)
    assert [d[0] for d in differences] == ["add_index"]
