"""The worklist's urgency score, computed in one place for SQL ordering and for display.

score = sum over the urgent findings of probability x weight. The weights come from
CHESTX_URGENCY_WEIGHTS ("Pneumothorax=3,Edema=2,..."); a finding left out counts 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from chestx.errors import ConfigError
from chestx.labels import OBSERVATIONS

#: The findings a reader wants first, and how much each counts.
DEFAULT_WEIGHTS: dict[str, float] = {
    "Pneumothorax": 3.0,
    "Edema": 2.0,
    "Consolidation": 2.0,
    "Pleural Effusion": 1.5,
    "Enlarged Cardiomediastinum": 1.0,
}


def parse_weights(raw: str) -> dict[str, float]:
    """``"Pneumothorax=3, Edema=2"`` -> weights; names are CheXpert's (case-insensitive)."""
    raw = raw.strip()
    if not raw:
        return dict(DEFAULT_WEIGHTS)
    by_lower = {name.lower(): name for name in OBSERVATIONS}
    weights: dict[str, float] = {}
    for part in raw.split(","):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        observation = by_lower.get(name.strip().lower().replace("-", " ").replace("_", " "))
        if not sep or observation is None:
            raise ConfigError(
                f"CHESTX_URGENCY_WEIGHTS: {part.strip()!r} is not OBSERVATION=WEIGHT with one "
                f"of the 14 observations ({', '.join(OBSERVATIONS)})"
            )
        try:
            weight = float(value)
        except ValueError:
            raise ConfigError(
                f"CHESTX_URGENCY_WEIGHTS: {value.strip()!r} is not a number"
            ) from None
        if not 0 <= weight <= 1000:
            raise ConfigError(f"CHESTX_URGENCY_WEIGHTS: weight {weight:g} is out of 0 to 1000")
        weights[observation] = weight
    weights = {name: weight for name, weight in weights.items() if weight > 0}
    if not weights:
        raise ConfigError("CHESTX_URGENCY_WEIGHTS names no finding with a weight above 0")
    return weights


@dataclass(frozen=True)
class Term:
    """One finding's share of the score: "Pneumothorax 0.82 x 3 = 2.46"."""

    finding: str
    probability: float
    weight: float

    @property
    def points(self) -> float:
        return self.probability * self.weight

    def __str__(self) -> str:
        return f"{self.finding} {self.probability:.2f} × {self.weight:g} = {self.points:.2f}"

    def to_dict(self) -> dict:
        return {
            "finding": self.finding,
            "probability": self.probability,
            "weight": self.weight,
            "points": round(self.points, 6),
        }


@dataclass(frozen=True)
class Urgency:
    score: float
    terms: tuple[Term, ...]  # largest share first

    @property
    def why(self) -> str:
        return " + ".join(str(term) for term in self.terms)

    def to_dict(self) -> dict:
        return {
            "score": round(self.score, 6),
            "why": self.why,
            "terms": [t.to_dict() for t in self.terms],
        }


def urgency(probabilities: Mapping[str, float], weights: Mapping[str, float]) -> Urgency:
    terms = [Term(name, float(probabilities[name]), weight) for name, weight in weights.items()]
    terms.sort(key=lambda term: term.points, reverse=True)
    return Urgency(sum(term.points for term in terms), tuple(terms))


def sql_score(model, weights: Mapping[str, float]):
    """The same sum as a SQL expression over the study's probability columns."""
    from sqlalchemy import literal

    expression = literal(0.0)
    for name, weight in weights.items():
        expression = expression + model.column_for(name) * weight
    return expression
