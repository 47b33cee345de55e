"""analyze audio files

Audio files used to get no metadata work ("none"). The rendition task now
reads their duration and codecs, so catalogued audio files wait for it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05 00:20:00
"""

from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "UPDATE files SET rendition_state = 'pending' "
        "WHERE kind = 'audio' AND rendition_state = 'none'"
    )


def downgrade() -> None:
    op.execute(
        "UPDATE files SET rendition_state = 'none' "
        "WHERE kind = 'audio' AND rendition_state = 'pending'"
    )
