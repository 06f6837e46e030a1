"""The model card: model/model.json beside model/model.h5.

It says what the model is (observations, image size, preprocessing), what it was trained on and
how, how it scored, and whether it is a demo. The app shows it; ``check_card`` refuses a model
whose card doesn't match it.
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from chestx.errors import ModelError
from chestx.labels import OBSERVATIONS

INTENDED_USE = (
    "Research and education. Decision support at most: the probabilities are not a diagnosis "
    "and must be read by a qualified clinician."
)


@dataclass
class ModelCard:
    name: str
    version: str
    created: str
    demo: bool
    observations: list[str]
    image_size: int
    preprocessing: str
    policy: str | dict[str, str]
    start_weights: str
    fine_tuned_backbone: bool
    dataset: dict
    training: dict
    validation: dict
    packages: dict
    intended_use: str = INTENDED_USE
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> ModelCard:
        path = Path(path)
        if not path.is_file():
            raise ModelError(
                f"model card {path} not found: it is written beside model.h5 by `chestx train` "
                "or `chestx demo-model`"
            )
        try:
            data = json.loads(path.read_text())
            return cls(**data)
        except (json.JSONDecodeError, TypeError) as error:
            raise ModelError(f"model card {path} is not a valid ChestX card ({error})") from None

    @property
    def mean_competition_auc(self) -> float | None:
        return self.validation.get("mean_auc_competition_tasks")

    @property
    def summary(self) -> str:
        """One line for a page header: which model, trained on what, how it scored."""
        auc = self.mean_competition_auc
        score = "n/a" if auc is None else f"{auc:.3f}"
        kind = "DEMO model" if self.demo else "model"
        return (
            f"{kind} {self.name} {self.version}, trained on {self.dataset.get('name', '?')} "
            f"({self.dataset.get('train_images', '?')} images); 5-task validation AUC {score}"
        )


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for name in ("chestx", "tensorflow", "tensorflow-cpu", "keras", "numpy", "pillow"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    return versions


def now_iso() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def check_card(card: ModelCard, output_size: int, input_size: int) -> None:
    """Refuse a model whose card describes another model (other observations or image size)."""
    if list(card.observations) != list(OBSERVATIONS):
        raise ModelError(
            "the model card lists other observations than ChestX's 14 CheXpert observations; "
            "retrain with `chestx train` or rebuild the demo with `chestx demo-model`"
        )
    if output_size != len(OBSERVATIONS):
        raise ModelError(
            f"the model has {output_size} outputs but its card lists {len(OBSERVATIONS)} "
            "observations: the card belongs to another model"
        )
    if input_size != card.image_size:
        raise ModelError(
            f"the model takes {input_size} px images but its card says {card.image_size}: "
            "the card belongs to another model"
        )
