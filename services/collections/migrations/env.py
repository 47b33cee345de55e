"""Alembic environment shared in shape by every service's migrations."""

from alembic import context
from sqlalchemy import create_engine, pool

from services.collections.models import Base

config = context.config
url = config.get_main_option("sqlalchemy.url")


def run_migrations() -> None:
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()


run_migrations()
