"""Saving and finding studies: the only code that writes the studies table.

``StudyStore.save`` is race-safe: the row is inserted with ``ON CONFLICT DO NOTHING`` on the
unique (sha256, model name, model version), so when two identical uploads arrive at once one
row is written and both requests get it back. Kept images are PNGs re-encoded from the decoded
pixels (no metadata of the upload, no DICOM header), under a random name, in a folder outside
the web root; deleting a study deletes its image.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import os
import secrets
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from chestx.labels import OBSERVATIONS
from chestx.web.db import Database
from chestx.web.db.models import NAME_LENGTH, PROBABILITY_COLUMNS, Study, utcnow
from chestx.web.db.urgency import Urgency, sql_score, urgency

#: Findings the history filter can ask for; "any finding" means any of these.
FINDINGS = tuple(name for name in OBSERVATIONS if name != "No Finding")
UNIQUE_COLUMNS = ["sha256", "model_name", "model_version"]


def new_study_id() -> str:
    """128 random bits: knowing one study's address tells nothing about another's."""
    return secrets.token_urlsafe(16)


def display_name(raw: str | None, fallback: str = "upload") -> str:
    """A client's file name made safe to keep and show: no folders, no control or format
    characters, whitespace collapsed, at most NAME_LENGTH characters (Jinja escapes HTML)."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] not in {"C", "Z"} or ch == " ")
    name = " ".join(name.split())
    if len(name) > NAME_LENGTH:
        stem, dot, suffix = name.rpartition(".")
        keep = f".{suffix}" if dot and len(suffix) <= 8 else ""
        name = name[: NAME_LENGTH - len(keep) - 1] + "…" + keep
    return name or fallback


@dataclass
class NewStudy:
    """What one analysed upload adds to the store (nothing else is kept)."""

    sha256: str
    display_name: str
    model_name: str
    model_version: str
    image_format: str
    width: int
    height: int
    gate_passed: bool
    gate_overridden: bool
    probabilities: Mapping[str, float]
    model_seconds: float = 0.0
    gate_reasons: list[str] = field(default_factory=list)
    gate_statistics: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        values = {
            "sha256": self.sha256,
            "display_name": display_name(self.display_name),
            "model_name": self.model_name,
            "model_version": self.model_version,
            "image_format": self.image_format,
            "width": int(self.width),
            "height": int(self.height),
            "gate_passed": bool(self.gate_passed),
            "gate_overridden": bool(self.gate_overridden),
            "gate_reasons": list(self.gate_reasons),
            "gate_statistics": {k: float(v) for k, v in self.gate_statistics.items()},
            "warnings": list(self.warnings),
            "model_seconds": float(self.model_seconds),
        }
        for name, column in PROBABILITY_COLUMNS.items():
            values[column] = float(self.probabilities[name])
        return values


@dataclass
class Page:
    items: list
    page: int
    per_page: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.per_page))

    @property
    def has_previous(self) -> bool:
        return self.page > 1

    @property
    def has_next(self) -> bool:
        return self.page < self.pages


@dataclass(frozen=True)
class Filter:
    """The history's filter: a finding (None: any finding but No Finding) at or above a
    probability (0: no filter)."""

    finding: str | None = None
    min_probability: float = 0.0

    def clause(self):
        if self.min_probability <= 0:
            return None
        names = [self.finding] if self.finding else FINDINGS
        return or_(*(Study.column_for(name) >= self.min_probability for name in names))


class StudyStore:
    """The studies of one database, with the worklist's weights and the image folder."""

    def __init__(
        self,
        db: Database,
        weights: Mapping[str, float],
        page_size: int = 25,
        image_dir: Path | None = None,
    ):
        self.db = db
        self.weights = dict(weights)
        self.page_size = page_size
        self.image_dir = Path(image_dir) if image_dir else None
        if self.image_dir:
            self.image_dir.mkdir(parents=True, exist_ok=True)

    # --- writing ---------------------------------------------------------------------------

    def save(self, new: NewStudy, image_png: bytes | None = None) -> tuple[Study, bool]:
        """Insert the study, or return the one already saved for these bytes and this model.
        Returns (study, created)."""
        image_file = self._write_image(image_png) if image_png is not None else None
        values = new.row()
        try:
            for _ in range(3):  # a re-read can only miss if the row was deleted in between
                study_id = new_study_id()
                row = {"id": study_id, "created_at": utcnow(), "image_file": image_file, **values}
                with self.db.engine.begin() as connection:
                    inserted = connection.execute(self._insert, row).scalar_one_or_none()
                if inserted is not None:
                    image_file = None  # the row owns it now
                    return Study(read_at=None, **row), True  # what was written: no re-read
                existing = self.find(new.sha256, new.model_name, new.model_version)
                if existing is not None:
                    if (
                        image_file is not None
                        and existing.image_file is None
                        and self._attach_image(existing.id, image_file)
                    ):
                        existing.image_file, image_file = image_file, None
                    return existing, False
            raise RuntimeError("the study could not be saved")
        finally:
            if image_file is not None:
                self._remove_image(image_file)

    @functools.cached_property
    def _insert(self):
        """INSERT ... ON CONFLICT DO NOTHING RETURNING id, built once: the row comes as
        parameters (building the statement with its 30 values took most of a save's time)."""
        dialect = postgresql if self.db.backend == "postgresql" else sqlite
        return (
            dialect.insert(Study.__table__)
            .on_conflict_do_nothing(index_elements=UNIQUE_COLUMNS)
            .returning(Study.__table__.c.id)
        )

    def _attach_image(self, study_id: str, image_file: str) -> bool:
        with self.db.session() as session, session.begin():
            result = session.execute(
                update(Study)
                .where(Study.id == study_id, Study.image_file.is_(None))
                .values(image_file=image_file)
            )
            return result.rowcount == 1

    def mark_read(self, study_id: str, read: bool = True) -> Study | None:
        with self.db.session() as session, session.begin():
            session.execute(
                update(Study).where(Study.id == study_id).values(read_at=utcnow() if read else None)
            )
        return self.get(study_id)

    def delete(self, study_id: str) -> bool:
        """Delete the study and its kept image. False if there was no such study."""
        study = self.get(study_id)
        if study is None:
            return False
        with self.db.session() as session, session.begin():
            result = session.execute(Study.__table__.delete().where(Study.id == study_id))
        if study.image_file:
            self._remove_image(study.image_file)
        return result.rowcount == 1

    # --- images ----------------------------------------------------------------------------

    def _write_image(self, png: bytes) -> str | None:
        if self.image_dir is None:
            return None
        name = secrets.token_hex(16) + ".png"
        temporary = self.image_dir / f".{name}.part"
        temporary.write_bytes(png)
        os.replace(temporary, self.image_dir / name)
        return name

    def _remove_image(self, name: str) -> None:
        if self.image_dir is not None:
            (self.image_dir / name).unlink(missing_ok=True)

    def image_path(self, study: Study) -> Path | None:
        if self.image_dir is None or not study.image_file:
            return None
        path = self.image_dir / study.image_file
        return path if path.is_file() else None

    # --- reading ---------------------------------------------------------------------------

    def get(self, study_id: str) -> Study | None:
        with self.db.session() as session:
            return session.get(Study, study_id)

    def find(self, sha256: str, model_name: str, model_version: str) -> Study | None:
        with self.db.session() as session:
            return session.scalars(
                select(Study).where(
                    Study.sha256 == sha256,
                    Study.model_name == model_name,
                    Study.model_version == model_version,
                )
            ).one_or_none()

    def count(self) -> int:
        with self.db.session() as session:
            return session.scalar(select(func.count()).select_from(Study))

    def _page(self, query, page: int, per_page: int | None) -> Page:
        per_page = per_page or self.page_size
        page = max(1, page)
        with self.db.session() as session:
            counted = query.order_by(None).subquery()
            total = session.scalar(select(func.count()).select_from(counted))
            items = list(session.execute(query.limit(per_page).offset((page - 1) * per_page)))
        return Page(items, page, per_page, total)

    def history(
        self, page: int = 1, filter: Filter | None = None, per_page: int | None = None
    ) -> Page:
        """Every study, newest first; items are Study rows."""
        query = self._history_query(filter)
        result = self._page(query, page, per_page)
        result.items = [row[0] for row in result.items]
        return result

    def _history_query(self, filter: Filter | None):
        query = select(Study).order_by(Study.created_at.desc(), Study.id.desc())
        clause = filter.clause() if filter else None
        return query.where(clause) if clause is not None else query

    def export(self, filter: Filter | None = None) -> Iterator[Study]:
        """Every study matching the filter, newest first, read in batches."""
        with self.db.session() as session:
            yield from session.scalars(self._history_query(filter).execution_options(yield_per=500))

    def urgency(self, study: Study) -> Urgency:
        return urgency(study.probabilities, self.weights)

    def worklist(self, page: int = 1, per_page: int | None = None) -> Page:
        """Unread studies, most urgent first (oldest first among equals); items are
        (Study, Urgency) pairs."""
        score = sql_score(Study, self.weights).label("urgency")
        query = (
            select(Study, score)
            .where(Study.read_at.is_(None))
            .order_by(score.desc(), Study.created_at.asc(), Study.id.asc())
        )
        result = self._page(query, page, per_page)
        result.items = [(study, self.urgency(study)) for study, _ in result.items]
        return result

    def unread_count(self) -> int:
        with self.db.session() as session:
            return session.scalar(
                select(func.count()).select_from(Study).where(Study.read_at.is_(None))
            )


def as_utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
