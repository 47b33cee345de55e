"""drive counts

Each drive's file counts are kept on its row, so that listing drives does
not count every drive's files. The counts of drives already catalogued are
filled in here.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 04:15:00
"""

import sqlalchemy as sa
from alembic import op

import core.db


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

COUNTS = ("file_count", "missing_count", "total_bytes", "renditions_pending", "checksums_pending")


def upgrade() -> None:
    with op.batch_alter_table('sources', schema=None) as batch_op:
        for name in COUNTS:
            batch_op.add_column(
                sa.Column(name, sa.BigInteger(), server_default='0', nullable=False)
            )
        batch_op.add_column(
            sa.Column('counted_at', core.db.UTCDateTime(timezone=True), nullable=True)
        )
    op.execute(
        """
        UPDATE sources SET
            file_count = (SELECT count(*) FROM files f
                          WHERE f.source_id = sources.id AND f.presence = 'present'),
            missing_count = (SELECT count(*) FROM files f
                             WHERE f.source_id = sources.id AND f.presence = 'missing'),
            total_bytes = (SELECT coalesce(sum(f.size), 0) FROM files f
                           WHERE f.source_id = sources.id AND f.presence = 'present'),
            renditions_pending = (SELECT count(*) FROM files f
                                  WHERE f.source_id = sources.id AND f.presence = 'present'
                                  AND f.rendition_state = 'pending'),
            checksums_pending = (SELECT count(*) FROM files f
                                 WHERE f.source_id = sources.id AND f.presence = 'present'
                                 AND f.checksum IS NULL AND f.fingerprint <> '')
        """
    )


def downgrade() -> None:
    with op.batch_alter_table('sources', schema=None) as batch_op:
        batch_op.drop_column('counted_at')
        for name in reversed(COUNTS):
            batch_op.drop_column(name)
