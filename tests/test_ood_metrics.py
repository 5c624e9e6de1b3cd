"""detection_metrics on cases computed by hand, ties included, for both FPR conventions."""
import itertools

import numpy as np
import pytest
import torch

from ood.metrics import detection_metrics

KEYS = {"auroc", "aupr_in", "aupr_out", "fpr95", "fpr95_ood_positive"}


def brute_force_auroc(id_scores, ood_scores):
    pairs = list(itertools.product(id_scores, ood_scores))
    return sum(1.0 if i > o else 0.5 if i == o else 0.0 for i, o in pairs) / len(pairs)


def test_tie_at_the_threshold_counts_as_accepted():
    # 20 ID scores 1..20: keeping 95% (19 of 20) puts the threshold at 2.
    # OOD 2 ties with it and is accepted, OOD 3 is above it: fpr95 = 2/4.
    # (NC-OOD's strict '>' would accept only the 3: 1/4.)
    # OOD positive: catching 95% of the 4 OOD samples needs all 4, so samples with
    # score <= 3 are flagged OOD: ID 1, 2, 3 -> fpr95_ood_positive = 3/20.
    id_scores = list(range(1, 21))
    ood_scores = [2.0, 0.0, 0.5, 3.0]
    m = detection_metrics(torch.tensor(id_scores, dtype=torch.float64), torch.tensor(ood_scores))
    assert set(m) == KEYS
    assert m["fpr95"] == pytest.approx(0.5, abs=1e-15)
    assert m["fpr95_ood_positive"] == pytest.approx(0.15, abs=1e-15)
    # pairs: OOD 0 and 0.5 lose to all 20 ID (40); OOD 2 loses to 18 ID and ties 1;
    # OOD 3 loses to 17 ID and ties 1.
    assert m["auroc"] == pytest.approx((40 + 18.5 + 17.5) / 80, abs=1e-15)


def test_saturated_msp_ties():
    # MSP saturated at 1.0 for 19 of 20 ID samples and 3 of 10 OOD samples.
    # Threshold keeping 95% of ID = 1.0, the 3 saturated OOD samples are accepted: fpr95 = 0.3
    # (NC-OOD's strict '>' reports 0.0 here). Catching 95% of OOD needs the 1.0 OOD samples too,
    # which flags every ID sample: fpr95_ood_positive = 1.0.
    id_scores = np.array([1.0] * 19 + [0.7])
    ood_scores = np.array([1.0] * 3 + [0.5] * 7)
    m = detection_metrics(id_scores, ood_scores)
    assert m["fpr95"] == pytest.approx(0.3, abs=1e-15)
    assert m["fpr95_ood_positive"] == pytest.approx(1.0, abs=1e-15)
    # 19*7 wins + 19*3 ties for the 1.0 ID samples, 7 wins for the 0.7 one, out of 200 pairs.
    assert m["auroc"] == pytest.approx((133 + 0.5 * 57 + 7) / 200, abs=1e-15)


def test_aupr_by_trapezoid_on_a_tiny_case():
    # ID positive, thresholds 3 > 2 > 1: (recall, precision) = (1/2, 1), (1/2, 1/2), (1, 2/3),
    # plus sklearn's end point (0, 1). Trapezoids: 1/2 * 1 + 0 + 1/2 * (1/2 + 2/3) / 2 = 19/24.
    # OOD positive on -score: (1, 1/2) then (0, 0) at -1, plus (0, 1): area 1/2 * 1/2 = 1/4.
    m = detection_metrics([3.0, 1.0], [2.0])
    assert m["aupr_in"] == pytest.approx(19 / 24, abs=1e-15)
    assert m["aupr_out"] == pytest.approx(1 / 4, abs=1e-15)
    assert m["auroc"] == pytest.approx(0.5, abs=1e-15)
    assert m["fpr95"] == 1.0 and m["fpr95_ood_positive"] == 0.5


def test_auroc_equals_pairwise_count_with_many_ties():
    gen = np.random.default_rng(0)
    id_scores = gen.integers(0, 6, size=37).astype(float)
    ood_scores = gen.integers(0, 4, size=23).astype(float)
    m = detection_metrics(id_scores, ood_scores)
    assert m["auroc"] == pytest.approx(brute_force_auroc(id_scores, ood_scores), abs=1e-12)
    assert all(0.0 <= v <= 1.0 for v in m.values())


def test_perfect_and_reversed_separation():
    good = detection_metrics([5.0, 6.0, 7.0], [1.0, 2.0])
    assert good == {"auroc": 1.0, "aupr_in": 1.0, "aupr_out": 1.0, "fpr95": 0.0, "fpr95_ood_positive": 0.0}
    bad = detection_metrics([1.0, 2.0], [5.0, 6.0, 7.0])
    assert bad["auroc"] == 0.0 and bad["fpr95"] == 1.0 and bad["fpr95_ood_positive"] == 1.0


@pytest.mark.parametrize("id_scores, ood_scores, message", [
    ([], [1.0], "id_scores is empty"),
    ([1.0], torch.tensor([]), "ood_scores is empty"),
    ([1.0, float("nan")], [0.0], "id_scores contains 1 NaN/inf"),
    ([1.0], [0.0, float("inf"), -float("inf")], "ood_scores contains 2 NaN/inf"),
    ([[1.0, 2.0]], [0.0], "must be 1-D"),
])
def test_bad_inputs_raise_clear_errors(id_scores, ood_scores, message):
    with pytest.raises(ValueError, match=message):
        detection_metrics(id_scores, ood_scores)


def test_fpr95_strict_is_nc_oods_own_number():
    from ood.metrics import fpr95_strict

    # the saturated case above: NC-OOD's threshold is 1.0 and its strict '>' counts no OOD sample
    assert fpr95_strict(np.array([1.0] * 19 + [0.7]), np.array([1.0] * 3 + [0.5] * 7)) == 0.0
    # ID 1..20: t = sorted[round(1.0)] = 2; OOD 2 ties (not counted), OOD 3 counts: 1/4 (fpr95 says 2/4)
    assert fpr95_strict(list(range(1, 21)), [2.0, 0.0, 0.5, 3.0]) == 0.25
    # Python's round halves to even: n = 50 -> index round(2.5) = 2, n = 70 -> round(3.5) = 4
    assert fpr95_strict(np.arange(50.0), [1.5, 2.5]) == 0.5 and fpr95_strict(np.arange(70.0), [3.5, 4.5]) == 0.5
    # without ties and with n_id a multiple of 20 it is fpr95
    rng = np.random.default_rng(0)
    id_scores, ood_scores = rng.normal(1.0, 1.0, 400), rng.normal(0.0, 1.0, 300)
    assert fpr95_strict(id_scores, ood_scores) == pytest.approx(detection_metrics(id_scores, ood_scores)["fpr95"])
