"""lighter file indexes

Every file row of a scan updates each index of ``files``, so an index that
no query uses costs every scan. No query looks files up by fingerprint
(moves are paired from the scan's staging rows), and only files with a
checksum are ever looked up by it.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 22:05:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

HAS_CHECKSUM = sa.text('checksum IS NOT NULL')


def upgrade() -> None:
    with op.batch_alter_table('files', schema=None) as batch_op:
        batch_op.drop_index('ix_files_fingerprint')
        batch_op.drop_index('ix_files_checksum')
        batch_op.create_index(
            'ix_files_checksum', ['org_id', 'checksum'], unique=False,
            postgresql_where=HAS_CHECKSUM, sqlite_where=HAS_CHECKSUM,
        )


def downgrade() -> None:
    with op.batch_alter_table('files', schema=None) as batch_op:
        batch_op.drop_index('ix_files_checksum')
        batch_op.create_index('ix_files_checksum', ['org_id', 'checksum'], unique=False)
        batch_op.create_index('ix_files_fingerprint', ['source_id', 'fingerprint'], unique=False)
