"""NCLoss (Haas, Yolland & Rabus, TMLR 2022): the metrics of metrics.nc made a batch loss."""
import pytest
import torch

from metrics.nc import nc_metrics
from nc_control import NCLoss

pytestmark = pytest.mark.usefixtures("one_thread")
METRIC_OF_TERM = {"nc1": "nc1", "en_means": "nc2_equinorm", "en_classifier": "w_equinorm",
                  "ea_means": "nc2_equiangle", "ea_classifier": "w_equiangle", "nc3": "nc3"}


def noisy_batch(n, d, c, seed=0, spread=2.0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % c
    features = torch.randn(n, d, generator=g, dtype=torch.float64) + spread * torch.randn(c, d, generator=g, dtype=torch.float64)[labels]
    return features, labels, torch.randn(c, d, generator=g, dtype=torch.float64)


def etf_batch(c, d, per_class, scale=3.0, w_scale=0.5, seed=0):
    """Features sitting exactly on the rotated vertices of a simplex ETF (plus an offset), and W
    the same vertices at another scale: perfect collapse."""
    g = torch.Generator().manual_seed(seed)
    centring = torch.eye(c, dtype=torch.float64) - 1.0 / c                 # rows: a simplex ETF in R^C
    basis = torch.linalg.svd(centring).U[:, :c - 1]                        # orthonormal basis of 1-perp
    simplex = torch.zeros(c, d, dtype=torch.float64)
    simplex[:, :c - 1] = centring @ basis                                  # the same ETF in R^(C-1), padded
    rotation, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    vertices = simplex @ rotation.T
    labels = torch.arange(c).repeat_interleave(per_class)
    offset = torch.randn(d, generator=g, dtype=torch.float64)
    return scale * vertices[labels] + offset, labels, w_scale * vertices


@pytest.mark.parametrize("n, d, c", [(60, 16, 5), (60, 3, 6), (48, 5, 6)])
def test_terms_equal_the_nc_metrics_of_the_batch(n, d, c):
    features, labels, weight = noisy_batch(n, d, c)
    terms = NCLoss().terms(features, labels, weight)
    metrics = nc_metrics(features, labels, c, weight)
    assert list(terms) == list(METRIC_OF_TERM)
    for term, key in METRIC_OF_TERM.items():
        assert float(terms[term]) == pytest.approx(metrics[key], rel=1e-9), term
    total = NCLoss()(features.float(), labels, weight.float())
    assert total.dtype == torch.float32
    assert float(total) == pytest.approx(sum(metrics[k] for k in METRIC_OF_TERM.values()), rel=1e-5)


@pytest.mark.parametrize("c, d", [(4, 8), (6, 5), (3, 2)])
def test_zero_at_a_simplex_etf(c, d):
    features, labels, weight = etf_batch(c, d, per_class=3)
    terms = NCLoss().terms(features, labels, weight)
    for name, value in terms.items():
        assert abs(float(value)) < 1e-10, (name, float(value))


def test_zero_at_collapse_when_a_class_is_absent_and_singletons_are_dropped():
    features, labels, weight = etf_batch(5, 8, per_class=3)
    keep = (labels != 4) & ~((labels == 3) & (torch.arange(len(labels)) % 3 != 0))  # class 4 absent, class 3 seen once
    terms = NCLoss().terms(features[keep], labels[keep], weight)
    assert all(abs(float(v)) < 1e-10 for v in terms.values()), terms
    # the singleton's sample changes nothing: the terms are those of the batch without it
    noisy, noisy_labels, w = noisy_batch(40, 8, 5)
    with_singleton = torch.cat([noisy_labels[noisy_labels != 4], torch.tensor([4])])
    rows = torch.cat([noisy[noisy_labels != 4], noisy[:1]])
    a = NCLoss().terms(rows, with_singleton, w)
    b = NCLoss().terms(noisy[noisy_labels != 4], noisy_labels[noisy_labels != 4], w)
    for name in a:
        assert float(a[name]) == pytest.approx(float(b[name]), rel=1e-12), name


@pytest.mark.parametrize("d, c", [(6, 3), (2, 4)])
def test_gradients_match_finite_differences(d, c):
    features, labels, weight = noisy_batch(4 * c, d, c, seed=1)
    features.requires_grad_(True)
    weight.requires_grad_(True)
    loss = lambda h, w: torch.stack(list(NCLoss().terms(h, labels, w).values())).sum()
    assert torch.autograd.gradcheck(loss, (features, weight), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_optimizing_features_and_weights_lowers_nc1_and_the_loss():
    torch.manual_seed(0)
    features, labels, weight = noisy_batch(60, 12, 4, seed=2, spread=0.7)
    h, w = features.float().requires_grad_(True), weight.float().requires_grad_(True)
    opt = torch.optim.Adam([h, w], lr=0.02)
    criterion = NCLoss()
    with torch.no_grad():
        first = float(criterion(h, labels, w))
    for _ in range(60):
        opt.zero_grad()
        loss = criterion(h, labels, w)
        loss.backward()
        assert torch.isfinite(h.grad).all() and torch.isfinite(w.grad).all()
        opt.step()
    before = nc_metrics(features, labels, 4, weight)
    after = nc_metrics(h.detach().double(), labels, 4, w.detach().double())
    assert after["nc1"] < 0.3 * before["nc1"]
    assert after["nc3"] < before["nc3"] and after["nc2_equiangle"] < before["nc2_equiangle"]
    with torch.no_grad():
        assert float(criterion(h, labels, w)) < 0.5 * first


def test_batches_it_cannot_measure_are_clear_errors():
    features, labels, weight = noisy_batch(8, 4, 4)
    with pytest.raises(ValueError, match="at least 2 classes with at least 2 samples"):
        NCLoss()(features[:4], labels[:4], weight)  # one sample per class
    with pytest.raises(ValueError, match="at least 2 classes"):
        NCLoss()(features[labels == 0], labels[labels == 0], weight)
    with pytest.raises(ValueError, match="linearly dependent"):
        NCLoss()(torch.zeros(8, 4), labels, weight)
    with pytest.raises(ValueError, match="C x D"):
        NCLoss()(features, labels, weight[:, :3])
