"""The five uncertainty policies of the CheXpert paper, as functions from raw labels to targets.

Raw labels are an (N, 14) float array with 1 (positive), 0 (negative), -1 (uncertain) and NaN
(blank: not mentioned in the report, treated as negative). A ``PolicyPlan`` picks one policy per
observation, as the paper's final model did, and ``TargetLayout`` turns a plan into the logits the
network trains and the masked loss over them.

Every policy ends in the same served model: binary observations get one logit and a sigmoid;
U-MultiClass observations get three logits (negative, positive, uncertain) during training, and
p(positive) / (p(negative) + p(positive)) = sigmoid(z_pos - z_neg) is folded into the final dense
layer when the model is saved. So model.h5 always ends in a plain 14-way sigmoid.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from chestx.errors import ConfigError
from chestx.labels import OBSERVATIONS, index_of

U_IGNORE = "U-Ignore"
U_ZEROS = "U-Zeros"
U_ONES = "U-Ones"
U_SELF_TRAINED = "U-SelfTrained"
U_MULTICLASS = "U-MultiClass"
POLICIES: tuple[str, ...] = (U_IGNORE, U_ZEROS, U_ONES, U_SELF_TRAINED, U_MULTICLASS)

#: The per-task choice of the paper's final model; other observations use U-Ones.
PAPER_PLAN: dict[str, str] = {
    "Atelectasis": U_ONES,
    "Edema": U_ONES,
    "Cardiomegaly": U_MULTICLASS,
    "Pleural Effusion": U_MULTICLASS,
    "Consolidation": U_SELF_TRAINED,
}

NEGATIVE_CLASS, POSITIVE_CLASS, UNCERTAIN_CLASS = 0, 1, 2


# --- the policies, one function each -------------------------------------------------------


def _as_labels(raw: np.ndarray) -> np.ndarray:
    return np.asarray(raw, dtype=np.float32)


def u_ignore(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Targets and a loss mask: uncertain labels leave the loss (mask 0), blanks are negative."""
    raw = _as_labels(raw)
    uncertain = raw == -1
    targets = np.where(raw == 1, 1.0, 0.0).astype(np.float32)
    return targets, (~uncertain).astype(np.float32)


def u_zeros(raw: np.ndarray) -> np.ndarray:
    """Uncertain and blank become 0."""
    return np.where(_as_labels(raw) == 1, 1.0, 0.0).astype(np.float32)


def u_ones(raw: np.ndarray) -> np.ndarray:
    """Uncertain becomes 1, blank 0."""
    raw = _as_labels(raw)
    return np.where((raw == 1) | (raw == -1), 1.0, 0.0).astype(np.float32)


def u_self_trained(raw: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Uncertain labels replaced by a U-Ignore model's predicted probability (soft labels)."""
    raw = _as_labels(raw)
    predicted = np.asarray(predicted, dtype=np.float32)
    if predicted.shape != raw.shape:
        raise ValueError(f"predictions {predicted.shape} don't match labels {raw.shape}")
    hard = np.where(raw == 1, 1.0, 0.0)
    return np.where(raw == -1, predicted, hard).astype(np.float32)


def u_multiclass(raw: np.ndarray) -> np.ndarray:
    """Class indices for a 3-way softmax: 0 negative (and blank), 1 positive, 2 uncertain."""
    raw = _as_labels(raw)
    classes = np.full(raw.shape, NEGATIVE_CLASS, dtype=np.int64)
    classes[raw == 1] = POSITIVE_CLASS
    classes[raw == -1] = UNCERTAIN_CLASS
    return classes


def multiclass_probability(class_probabilities: np.ndarray) -> np.ndarray:
    """p(positive) / (p(negative) + p(positive)) from (..., 3) softmax outputs."""
    p = np.asarray(class_probabilities, dtype=np.float64)
    negative, positive = p[..., NEGATIVE_CLASS], p[..., POSITIVE_CLASS]
    return (positive / (negative + positive)).astype(np.float32)


# --- choosing policies per observation ------------------------------------------------------


@dataclass(frozen=True)
class PolicyPlan:
    """One policy per observation, in OBSERVATIONS order."""

    per_observation: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.per_observation) != len(OBSERVATIONS):
            raise ConfigError("a policy plan needs one policy per observation (14)")
        for policy in self.per_observation:
            if policy not in POLICIES:
                raise ConfigError(f"unknown policy {policy!r}; choose from {', '.join(POLICIES)}")

    @classmethod
    def uniform(cls, policy: str) -> PolicyPlan:
        return cls((canonical_policy(policy),) * len(OBSERVATIONS))

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, str], default: str = U_ONES) -> PolicyPlan:
        plan = [canonical_policy(default)] * len(OBSERVATIONS)
        for observation, policy in mapping.items():
            plan[index_of(observation)] = canonical_policy(policy)
        return cls(tuple(plan))

    @property
    def uses(self) -> frozenset[str]:
        return frozenset(self.per_observation)

    def describe(self) -> str | dict[str, str]:
        """A single name when uniform, else the mapping: what the model card stores."""
        if len(self.uses) == 1:
            return self.per_observation[0]
        return dict(zip(OBSERVATIONS, self.per_observation, strict=True))


def canonical_policy(name: str) -> str:
    """Accept 'U-Ones', 'u_ones', 'ones', 'U-MultiClass', ... and return the canonical name."""
    key = name.strip().lower().replace("_", "").replace("-", "")
    key = key[1:] if key.startswith("u") and key[1:] in _ALIASES else key
    if key not in _ALIASES:
        raise ConfigError(f"unknown policy {name!r}; choose from {', '.join(POLICIES)}")
    return _ALIASES[key]


_ALIASES = {p.lower().replace("-", "")[1:]: p for p in POLICIES}


def parse_policy(spec: str | Mapping[str, str] | PolicyPlan) -> PolicyPlan:
    """Parse ``U-Ones``, ``paper``, or ``Atelectasis=U-Ones,Edema=U-Ones,default=U-Zeros``."""
    if isinstance(spec, PolicyPlan):
        return spec
    if isinstance(spec, Mapping):
        mapping = dict(spec)
        default = mapping.pop("default", U_ONES)
        return PolicyPlan.from_mapping(mapping, default)
    text = spec.strip()
    if text.lower() == "paper":
        return PolicyPlan.from_mapping(PAPER_PLAN, U_ONES)
    if "=" not in text:
        return PolicyPlan.uniform(text)
    mapping: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, policy = part.partition("=")
        if not policy:
            raise ConfigError(f"policy mapping entry {part!r} should read OBSERVATION=POLICY")
        mapping[name.strip()] = policy.strip()
    try:
        return parse_policy(mapping)
    except ValueError as error:
        raise ConfigError(str(error)) from None


# --- from a plan to logits, targets and loss ------------------------------------------------


@dataclass(frozen=True)
class TargetLayout:
    """Where each observation's logits sit in the training head's output.

    Binary observations own one logit, U-MultiClass observations three (negative, positive,
    uncertain). ``encode`` packs targets and a loss mask side by side as ``y_true``.
    """

    plan: PolicyPlan

    @property
    def logit_slices(self) -> tuple[slice, ...]:
        slices, start = [], 0
        for policy in self.plan.per_observation:
            width = 3 if policy == U_MULTICLASS else 1
            slices.append(slice(start, start + width))
            start += width
        return tuple(slices)

    @property
    def num_logits(self) -> int:
        return self.logit_slices[-1].stop

    @property
    def binary_logits(self) -> np.ndarray:
        return np.array(
            [
                s.start
                for s, p in zip(self.logit_slices, self.plan.per_observation, strict=True)
                if p != U_MULTICLASS
            ],
            dtype=np.int64,
        )

    @property
    def multiclass_logits(self) -> np.ndarray:
        rows = [
            list(range(s.start, s.stop))
            for s, p in zip(self.logit_slices, self.plan.per_observation, strict=True)
            if p == U_MULTICLASS
        ]
        return np.array(rows, dtype=np.int64).reshape(-1, 3)

    def encode(self, raw: np.ndarray, soft: np.ndarray | None = None) -> np.ndarray:
        """(N, 2K) array: K targets then K mask values, from raw (N, 14) labels.

        ``soft`` holds the U-Ignore model's probabilities for U-SelfTrained observations; without
        it (the first round) those observations are trained with U-Ignore.
        """
        raw = _as_labels(raw)
        n, k = raw.shape[0], self.num_logits
        targets = np.zeros((n, k), dtype=np.float32)
        mask = np.ones((n, k), dtype=np.float32)
        ignore_targets, ignore_mask = u_ignore(raw)
        classes = u_multiclass(raw)
        for j, (where, policy) in enumerate(
            zip(self.logit_slices, self.plan.per_observation, strict=True)
        ):
            column = raw[:, j]
            if policy == U_MULTICLASS:
                targets[:, where] = np.eye(3, dtype=np.float32)[classes[:, j]]
            elif policy == U_ZEROS:
                targets[:, where.start] = u_zeros(column)
            elif policy == U_ONES:
                targets[:, where.start] = u_ones(column)
            elif policy == U_SELF_TRAINED and soft is not None:
                targets[:, where.start] = u_self_trained(column, soft[:, j])
            else:  # U-Ignore, and U-SelfTrained's first round
                targets[:, where.start] = ignore_targets[:, j]
                mask[:, where.start] = ignore_mask[:, j]
        return np.concatenate([targets, mask], axis=1)

    def fold_matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """(K, 14) matrix M with probability = sigmoid(logits @ M), and its zero bias.

        A binary observation copies its logit; a U-MultiClass one takes z_pos - z_neg, because
        p_pos / (p_neg + p_pos) = sigmoid(z_pos - z_neg) for a softmax.
        """
        fold = np.zeros((self.num_logits, len(OBSERVATIONS)), dtype=np.float32)
        for j, (where, policy) in enumerate(
            zip(self.logit_slices, self.plan.per_observation, strict=True)
        ):
            if policy == U_MULTICLASS:
                fold[where.start + POSITIVE_CLASS, j] = 1.0
                fold[where.start + NEGATIVE_CLASS, j] = -1.0
            else:
                fold[where.start, j] = 1.0
        return fold, np.zeros(len(OBSERVATIONS), dtype=np.float32)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """The 14 served probabilities from training logits (what the folded model outputs)."""
        fold, _ = self.fold_matrix()
        return (1.0 / (1.0 + np.exp(-(np.asarray(logits, dtype=np.float64) @ fold)))).astype(
            np.float32
        )

    def loss_fn(self):  # -> Callable[[tensor, tensor], tensor]
        """Masked loss for Keras: binary cross-entropy on binary logits, softmax CE on triples."""
        from keras import ops

        k = self.num_logits
        binary = self.binary_logits
        multiclass = self.multiclass_logits

        def chestx_loss(y_true, logits):
            targets, mask = y_true[:, :k], y_true[:, k:]
            total = ops.zeros_like(logits[:, 0])
            count = ops.zeros_like(logits[:, 0])
            if binary.size:
                z = ops.take(logits, binary, axis=1)
                t = ops.take(targets, binary, axis=1)
                m = ops.take(mask, binary, axis=1)
                bce = ops.maximum(z, 0.0) - z * t + ops.log1p(ops.exp(-ops.abs(z)))
                total = total + ops.sum(bce * m, axis=1)
                count = count + ops.sum(m, axis=1)
            if multiclass.size:
                z = ops.take(logits, multiclass.reshape(-1), axis=1)
                z = ops.reshape(z, (-1, multiclass.shape[0], 3))
                t = ops.reshape(ops.take(targets, multiclass.reshape(-1), axis=1), ops.shape(z))
                log_p = z - ops.logsumexp(z, axis=-1, keepdims=True)
                total = total + ops.sum(-ops.sum(t * log_p, axis=-1), axis=1)
                count = count + float(multiclass.shape[0])
            return total / ops.maximum(count, 1.0)

        return chestx_loss
