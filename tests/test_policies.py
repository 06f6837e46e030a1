"""The five uncertainty policies on hand-written rows, the plan parser and the training loss."""

import numpy as np
import pytest

from chestx.errors import ConfigError
from chestx.labels import OBSERVATIONS
from chestx.policies import (
    PAPER_PLAN,
    U_IGNORE,
    U_MULTICLASS,
    U_ONES,
    U_SELF_TRAINED,
    U_ZEROS,
    PolicyPlan,
    TargetLayout,
    multiclass_probability,
    parse_policy,
    u_ignore,
    u_multiclass,
    u_ones,
    u_self_trained,
    u_zeros,
)

NAN = np.nan
# One column per label kind: positive, negative, uncertain, blank.
ROW = np.array([[1.0, 0.0, -1.0, NAN]])


def test_u_ignore_masks_uncertain_instead_of_zeroing_it():
    targets, mask = u_ignore(ROW)
    assert targets.tolist() == [[1, 0, 0, 0]]
    assert mask.tolist() == [[1, 1, 0, 1]]


def test_u_zeros_and_u_ones_map_uncertain_and_keep_blank_negative():
    assert u_zeros(ROW).tolist() == [[1, 0, 0, 0]]
    assert u_ones(ROW).tolist() == [[1, 0, 1, 0]]


def test_u_self_trained_puts_predictions_only_where_uncertain():
    predicted = np.array([[0.9, 0.8, 0.37, 0.6]])
    assert u_self_trained(ROW, predicted) == pytest.approx(np.array([[1, 0, 0.37, 0]]))


def test_u_multiclass_classes_and_reported_probability():
    assert u_multiclass(ROW).tolist() == [[1, 0, 2, 0]]
    p = np.array([[0.2, 0.6, 0.2], [0.1, 0.1, 0.8]])
    assert multiclass_probability(p) == pytest.approx([0.75, 0.5])


def test_parse_single_policy_and_aliases():
    for spec in ("U-Ones", "u_ones", "ones", "U-ONES"):
        assert parse_policy(spec) == PolicyPlan.uniform(U_ONES)
    with pytest.raises(ConfigError, match="unknown policy"):
        parse_policy("U-Maybe")


def test_parse_per_observation_mapping_and_paper_preset():
    plan = parse_policy("Atelectasis=U-Zeros, Edema=U-MultiClass, default=U-Ignore")
    assert plan.per_observation[OBSERVATIONS.index("Atelectasis")] == U_ZEROS
    assert plan.per_observation[OBSERVATIONS.index("Edema")] == U_MULTICLASS
    assert plan.per_observation[OBSERVATIONS.index("Fracture")] == U_IGNORE
    paper = parse_policy("paper")
    for observation, policy in PAPER_PLAN.items():
        assert paper.per_observation[OBSERVATIONS.index(observation)] == policy
    with pytest.raises(ConfigError, match="unknown observation"):
        parse_policy("Atelectasys=U-Ones")


def _raw_rows() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.choice([1.0, 0.0, -1.0, NAN], size=(6, len(OBSERVATIONS)))


def test_layout_encodes_each_policy_in_its_own_logits():
    raw = _raw_rows()
    plan = parse_policy(
        "Cardiomegaly=U-MultiClass,Edema=U-Ignore,Atelectasis=U-Zeros,"
        "Consolidation=U-SelfTrained,default=U-Ones"
    )
    layout = TargetLayout(plan)
    assert layout.num_logits == 14 + 2  # one observation has three logits
    y = layout.encode(raw)
    targets, mask = y[:, : layout.num_logits], y[:, layout.num_logits :]
    cardio = layout.logit_slices[OBSERVATIONS.index("Cardiomegaly")]
    assert targets[:, cardio].sum(axis=1).tolist() == [1.0] * 6  # one-hot
    assert (targets[:, cardio].argmax(axis=1) == u_multiclass(raw[:, 2])).all()
    edema = layout.logit_slices[OBSERVATIONS.index("Edema")].start
    assert (mask[:, edema] == (raw[:, 5] != -1)).all()
    consolidation = OBSERVATIONS.index("Consolidation")
    start = layout.logit_slices[consolidation].start
    # First round of U-SelfTrained is U-Ignore; the second uses the soft labels.
    assert (mask[:, start] == (raw[:, consolidation] != -1)).all()
    soft = np.full(raw.shape, 0.3, dtype=np.float32)
    again = layout.encode(raw, soft)
    expected = np.where(raw[:, consolidation] == -1, 0.3, raw[:, consolidation] == 1)
    assert again[:, start] == pytest.approx(expected)
    assert again[:, layout.num_logits + start].tolist() == [1.0] * 6


def test_folded_probability_equals_multiclass_ratio():
    layout = TargetLayout(parse_policy("U-MultiClass"))
    logits = np.random.default_rng(1).normal(size=(5, layout.num_logits))
    softmax = np.exp(logits.reshape(5, 14, 3))
    softmax /= softmax.sum(axis=-1, keepdims=True)
    assert layout.probabilities(logits) == pytest.approx(multiclass_probability(softmax), abs=1e-6)


def test_loss_matches_masked_cross_entropy_by_hand():
    raw = _raw_rows()
    plan = PolicyPlan.from_mapping({"Edema": U_MULTICLASS}, default=U_IGNORE)
    layout = TargetLayout(plan)
    logits = np.random.default_rng(2).normal(size=(len(raw), layout.num_logits)).astype("float32")
    y = layout.encode(raw)
    got = np.asarray(layout.loss_fn()(y, logits))

    k = layout.num_logits
    expected = []
    for row in range(len(raw)):
        total, count = 0.0, 0.0
        for j, where in enumerate(layout.logit_slices):
            if plan.per_observation[j] == U_MULTICLASS:
                z = logits[row, where]
                log_p = z - np.log(np.exp(z).sum())
                total -= (y[row, where] * log_p).sum()
                count += 1
            else:
                z, t, m = logits[row, where.start], y[row, where.start], y[row, k + where.start]
                p = 1 / (1 + np.exp(-z))
                total += m * -(t * np.log(p) + (1 - t) * np.log(1 - p))
                count += m
        expected.append(total / count)
    assert got == pytest.approx(expected, rel=1e-4)


def test_self_trained_plan_round_one_is_u_ignore():
    a = TargetLayout(PolicyPlan.uniform(U_SELF_TRAINED)).encode(_raw_rows())
    b = TargetLayout(PolicyPlan.uniform(U_IGNORE)).encode(_raw_rows())
    assert np.array_equal(a, b)
