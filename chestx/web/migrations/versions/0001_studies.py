"""The studies table: one saved prediction per (upload sha256, model name, model version).

Revision ID: 0001_studies
Revises:
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_studies"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The 14 CheXpert observations as columns, in CheXpert order (frozen here: a migration must
#: not change when chestx.labels does).
PROBABILITY_COLUMNS = (
    "p_no_finding",
    "p_enlarged_cardiomediastinum",
    "p_cardiomegaly",
    "p_lung_opacity",
    "p_lung_lesion",
    "p_edema",
    "p_consolidation",
    "p_pneumonia",
    "p_atelectasis",
    "p_pneumothorax",
    "p_pleural_effusion",
    "p_pleural_other",
    "p_fracture",
    "p_support_devices",
)


def upgrade() -> None:
    op.create_table(
        "studies",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("display_name", sa.String(120), nullable=False),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("model_version", sa.String(100), nullable=False),
        sa.Column("image_format", sa.String(16), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("gate_passed", sa.Boolean(), nullable=False),
        sa.Column("gate_overridden", sa.Boolean(), nullable=False),
        sa.Column("gate_reasons", sa.JSON(), nullable=False),
        sa.Column("gate_statistics", sa.JSON(), nullable=False),
        sa.Column("warnings", sa.JSON(), nullable=False),
        sa.Column("model_seconds", sa.Float(), nullable=False),
        sa.Column("image_file", sa.String(64), nullable=True),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
        *(sa.Column(name, sa.Float(), nullable=False) for name in PROBABILITY_COLUMNS),
        sa.UniqueConstraint(
            "sha256", "model_name", "model_version", name="uq_studies_upload_model"
        ),
    )
    op.create_index("ix_studies_created_at", "studies", ["created_at"])
    op.create_index("ix_studies_read_at", "studies", ["read_at"])


def downgrade() -> None:
    op.drop_index("ix_studies_read_at", table_name="studies")
    op.drop_index("ix_studies_created_at", table_name="studies")
    op.drop_table("studies")
