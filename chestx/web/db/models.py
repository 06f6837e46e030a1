"""The study table: one row per (uploaded bytes, model name, model version).

The 14 probabilities are 14 float columns named after the observations (``p_pleural_effusion``):
the finding filter is one indexable comparison and the worklist's urgency is one weighted sum,
the same on SQLite and PostgreSQL. No DICOM header value and no pixel is ever stored here.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from chestx.labels import OBSERVATIONS

NAME_LENGTH = 120


def column_name(observation: str) -> str:
    return "p_" + observation.lower().replace(" ", "_")


PROBABILITY_COLUMNS: dict[str, str] = {name: column_name(name) for name in OBSERVATIONS}


class Base(DeclarativeBase):
    pass


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Study(Base):
    __tablename__ = "studies"
    __table_args__ = (
        UniqueConstraint("sha256", "model_name", "model_version", name="uq_studies_upload_model"),
        Index("ix_studies_created_at", "created_at"),
        Index("ix_studies_read_at", "read_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    sha256: Mapped[str] = mapped_column(String(64))
    display_name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    model_name: Mapped[str] = mapped_column(String(200))
    model_version: Mapped[str] = mapped_column(String(100))
    image_format: Mapped[str] = mapped_column(String(16))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    gate_passed: Mapped[bool] = mapped_column(Boolean)
    gate_overridden: Mapped[bool] = mapped_column(Boolean)
    gate_reasons: Mapped[list] = mapped_column(JSON, default=list)
    gate_statistics: Mapped[dict] = mapped_column(JSON, default=dict)
    warnings: Mapped[list] = mapped_column(JSON, default=list)
    model_seconds: Mapped[float] = mapped_column(Float)
    image_file: Mapped[str | None] = mapped_column(String(64), default=None)
    read_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), default=None)

    p_no_finding: Mapped[float] = mapped_column(Float)
    p_enlarged_cardiomediastinum: Mapped[float] = mapped_column(Float)
    p_cardiomegaly: Mapped[float] = mapped_column(Float)
    p_lung_opacity: Mapped[float] = mapped_column(Float)
    p_lung_lesion: Mapped[float] = mapped_column(Float)
    p_edema: Mapped[float] = mapped_column(Float)
    p_consolidation: Mapped[float] = mapped_column(Float)
    p_pneumonia: Mapped[float] = mapped_column(Float)
    p_atelectasis: Mapped[float] = mapped_column(Float)
    p_pneumothorax: Mapped[float] = mapped_column(Float)
    p_pleural_effusion: Mapped[float] = mapped_column(Float)
    p_pleural_other: Mapped[float] = mapped_column(Float)
    p_fracture: Mapped[float] = mapped_column(Float)
    p_support_devices: Mapped[float] = mapped_column(Float)

    @classmethod
    def column_for(cls, observation: str):
        return getattr(cls, PROBABILITY_COLUMNS[observation])

    @property
    def probabilities(self) -> dict[str, float]:
        """Observation -> probability, in CheXpert order."""
        return {name: getattr(self, column) for name, column in PROBABILITY_COLUMNS.items()}

    def ranked(self) -> list[tuple[str, float]]:
        return sorted(self.probabilities.items(), key=lambda item: item[1], reverse=True)

    @property
    def created_utc(self) -> dt.datetime:
        """created_at as an aware UTC time (SQLite hands back naive datetimes)."""
        value = self.created_at
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)

    @property
    def read_utc(self) -> dt.datetime | None:
        value = self.read_at
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
