"""metrics.nc: exact zeros at a simplex ETF, invariances, streaming precision, NumPy references, errors."""
import numpy as np
import pytest
import torch

from metrics.nc import PINV_RTOL, ClassStats, NCCAccumulator, nc_metrics, nc_metrics_from_stats

BASE_KEYS = ["nc1", "nc1_cdnv", "vci", "nc2_equinorm", "nc2_equiangle", "nc2_etf_error"]
CLASSIFIER_KEYS = ["w_equinorm", "w_equiangle", "w_etf_error", "wm_etf_error", "nc3", "nc4", "bias_collapse"]


def clustered(num_classes, dim, per_class, noise, seed, offset=0.0):
    """float32 features: random class centres (scale 3) plus isotropic noise, labels shuffled."""
    g = torch.Generator().manual_seed(seed)
    centres = 3.0 * torch.randn(num_classes, dim, generator=g)
    labels = torch.arange(num_classes).repeat(per_class)[torch.randperm(num_classes * per_class, generator=g)]
    feats = centres[labels] + noise * torch.randn(labels.shape[0], dim, generator=g) + offset
    return feats.float(), labels


def simplex_etf(num_classes, dim, seed, scale=1.0):
    """C x D matrix whose rows form a simplex ETF in a random C-dimensional subspace (D >= C)."""
    g = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(dim, num_classes, generator=g, dtype=torch.float64))
    c = num_classes
    etf = (c / (c - 1)) ** 0.5 * (torch.eye(c, dtype=torch.float64) - 1.0 / c)
    return scale * etf @ basis.T, basis


# ---------------------------------------------------------------- NumPy references (plain, two-pass)

def ref_stats(x, y, c):
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    means = np.stack([x[y == k].mean(axis=0) for k in range(c)])
    scatter = np.zeros((x.shape[1], x.shape[1]))
    var = np.zeros(c)
    for k in range(c):
        z = x[y == k] - means[k]
        scatter += z.T @ z
        var[k] = (z ** 2).sum(axis=1).mean()
    mu_g = means.mean(axis=0)
    sigma_b = np.zeros_like(scatter)
    for k in range(c):
        v = (means[k] - mu_g)[:, None]
        sigma_b += v @ v.T
    return means, mu_g, scatter / x.shape[0], sigma_b / c, var


def ref_pinv(a, keep):
    evals, evecs = np.linalg.eigh(a)
    evals, evecs = evals[::-1][:keep], evecs[:, ::-1][:, :keep]
    ok = evals > PINV_RTOL * evals[0]
    return evecs[:, ok] @ np.diag(1.0 / evals[ok]) @ evecs[:, ok].T


def ref_etf_error(g):
    c = g.shape[0]
    return np.linalg.norm(g / np.linalg.norm(g) - (np.eye(c) - np.ones((c, c)) / c) / np.sqrt(c - 1))


def ref_equinorm(v):
    norms = np.array([np.linalg.norm(row) for row in v])
    return norms.std(ddof=1) / norms.mean()


def ref_equiangle(v):
    c = v.shape[0]
    vals = [abs(v[i] @ v[j] / (np.linalg.norm(v[i]) * np.linalg.norm(v[j])) + 1.0 / (c - 1))
            for i in range(c) for j in range(c) if i != j]
    return float(np.mean(vals))


def ref_metrics(x, y, c, w, b):
    x, w, b = (np.asarray(t, dtype=np.float64) for t in (x, w, b))
    y = np.asarray(y)
    means, mu_g, sw, sb, var = ref_stats(x, y, c)
    d = x.shape[1]
    r = min(d, c - 1)
    mc = means - mu_g
    cdnv = [(var[i] + var[j]) / (2 * np.sum((means[i] - means[j]) ** 2)) for i in range(c) for j in range(i + 1, c)]
    ncc = [np.argmin([np.linalg.norm(h - means[k]) for k in range(c)]) for h in x]
    net = np.argmax(x @ w.T + b, axis=1)
    return {
        "nc1": np.trace(sw @ ref_pinv(sb, r)) / c,
        "nc1_cdnv": np.mean(cdnv),
        "vci": 1 - np.trace(ref_pinv(sw + sb, d) @ sb) / r,
        "nc2_equinorm": ref_equinorm(mc),
        "nc2_equiangle": ref_equiangle(mc),
        "nc2_etf_error": ref_etf_error(mc @ mc.T),
        "w_equinorm": ref_equinorm(w),
        "w_equiangle": ref_equiangle(w),
        "w_etf_error": ref_etf_error(w @ w.T),
        "wm_etf_error": ref_etf_error(w @ mc.T),
        "nc3": np.linalg.norm(w / np.linalg.norm(w) - mc / np.linalg.norm(mc)) ** 2,
        "nc4": np.mean(np.array(ncc) != net),
        "bias_collapse": np.linalg.norm(w @ mu_g + b),
        "ncc_acc": np.mean(np.array(ncc) == y),
    }


# ---------------------------------------------------------------- tests

@pytest.mark.parametrize("num_classes,dim", [(6, 10), (10, 4)])  # D above and below C - 1
def test_every_key_matches_numpy_reference(num_classes, dim):
    torch.manual_seed(0)
    x, y = clustered(num_classes, dim, per_class=30, noise=2.0, seed=num_classes, offset=5.0)
    w, b = torch.randn(num_classes, dim), torch.randn(num_classes)
    got = nc_metrics(x, y, num_classes, weight=w, bias=b)
    want = ref_metrics(x.numpy(), y.numpy(), num_classes, w.numpy(), b.numpy())
    assert list(got) == BASE_KEYS + [k for k in CLASSIFIER_KEYS if k != "nc4"] + ["nc4", "ncc_acc"]
    assert 0 < want["nc4"] < 1 and 0 < want["ncc_acc"] < 1  # the references really compare different rules
    for key, value in want.items():
        assert isinstance(got[key], float)
        assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


def test_perfect_simplex_etf_gives_zero_everywhere():
    c, d = 5, 9
    means, basis = simplex_etf(c, d, seed=1, scale=3.0)
    # a common offset orthogonal to the means' span keeps W mu_G + b = 0 with W = centred means, b = 0
    g = torch.Generator().manual_seed(2)
    offset = torch.randn(d, generator=g, dtype=torch.float64)
    offset -= basis @ (basis.T @ offset)
    labels = torch.arange(c).repeat(7)
    feats = means[labels] + 10.0 * offset
    got = nc_metrics(feats, labels, c, weight=means, bias=torch.zeros(c, dtype=torch.float64))
    assert set(got) == set(BASE_KEYS + CLASSIFIER_KEYS + ["ncc_acc"])
    assert got.pop("ncc_acc") == 1.0  # every sample sits on its class mean
    for key, value in got.items():
        assert abs(value) <= 1e-10, (key, value)


def test_metrics_grow_with_within_class_noise():
    torch.manual_seed(0)
    c, d = 8, 12
    means, _ = simplex_etf(c, d, seed=3)
    labels = torch.arange(c).repeat(50)
    noise = torch.randn(labels.shape[0], d, dtype=torch.float64)
    runs = [nc_metrics(means[labels] + s * noise, labels, c) for s in (0.05, 0.2, 0.8)]
    for key in ("nc1", "nc1_cdnv", "vci"):
        values = [r[key] for r in runs]
        assert values[0] < values[1] < values[2], (key, values)
    assert runs[0]["vci"] > 0


def test_vci_stays_in_its_bounds_at_collapse():
    # near-perfect collapse puts Tr(Sigma_T^+ Sigma_B) / r within a few ulps of 1: on many CPUs the
    # plain difference 1 - Tr/r comes out a few 1e-16 below 0 for some of these draws
    values = []
    for seed in range(60):
        g = torch.Generator().manual_seed(seed)
        c, d = int(torch.randint(2, 12, (1,), generator=g)), int(torch.randint(2, 40, (1,), generator=g))
        means = 5.0 * torch.randn(c, d, generator=g, dtype=torch.float64)
        labels = torch.arange(c).repeat(7)
        feats = means[labels] + 1e-7 * torch.randn(len(labels), d, generator=g, dtype=torch.float64)
        values.append(nc_metrics(feats, labels, c)["vci"])
    assert all(0.0 <= v <= 1.0 for v in values), min(values)
    assert max(values) < 1e-12  # clamping rounding, not hiding a real value


def test_clamp_rounding_leaves_real_excursions_visible():
    from metrics.nc import ROUNDING_TOL, _clamp_rounding
    assert _clamp_rounding(-3e-14, 0.0, 1.0) == 0.0 and _clamp_rounding(1.0 + 3e-14, 0.0, 1.0) == 1.0
    assert _clamp_rounding(-10 * ROUNDING_TOL, 0.0, 1.0) == -10 * ROUNDING_TOL
    assert _clamp_rounding(0.25, 0.0, 1.0) == 0.25


def test_vci_invariant_to_invertible_linear_map():
    torch.manual_seed(0)
    c, d = 7, 10
    x, y = clustered(c, d, per_class=40, noise=1.0, seed=4)
    x = x.double()
    q1, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64))
    q2, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64))
    a = q1 @ torch.diag(torch.logspace(-1, 1, d, dtype=torch.float64)) @ q2  # condition number 100
    before, after = nc_metrics(x, y, c)["vci"], nc_metrics(x @ a.T + 3.0, y, c)["vci"]
    assert after == pytest.approx(before, rel=1e-9)
    # nc1 (truncated pseudo-inverse) is not invariant to such a map when D > C - 1: the test can tell
    assert nc_metrics(x @ a.T, y, c)["nc1"] != pytest.approx(nc_metrics(x, y, c)["nc1"], rel=1e-3)


def test_nc1_invariant_to_rotation_and_scaling():
    torch.manual_seed(0)
    c, d = 7, 10
    x, y = clustered(c, d, per_class=40, noise=1.0, seed=5)
    x = x.double()
    q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64))
    assert nc_metrics(7.5 * x @ q.T, y, c)["nc1"] == pytest.approx(nc_metrics(x, y, c)["nc1"], rel=1e-9)


def test_streaming_stats_match_two_pass_float64_with_large_offset():
    torch.manual_seed(0)
    c, d = 10, 16
    x, y = clustered(c, d, per_class=300, noise=0.5, seed=6, offset=1e3)  # float32, as a network emits
    assert x.dtype == torch.float32
    acc = ClassStats(c, d)
    for start in range(0, x.shape[0], 128):
        acc.update(x[start:start + 128], y[start:start + 128])
    got = acc.compute()
    means, mu_g, sw, sb, var = ref_stats(x.numpy(), y.numpy(), c)

    def rel(a, b):
        return np.linalg.norm(a.numpy() - b) / np.linalg.norm(b)

    assert got.n == x.shape[0] and got.counts.tolist() == [300] * c
    for name, a, b in [("means", got.means, means), ("global_mean", got.global_mean, mu_g),
                       ("sigma_w", got.sigma_w, sw), ("sigma_b", got.sigma_b, sb), ("class_var", got.class_var, var)]:
        assert a.dtype == torch.float64
        assert rel(a, b) <= 1e-9, name


def test_streaming_nc4_equals_in_memory_and_stats_path_equals_nc_metrics():
    torch.manual_seed(0)
    c, d = 6, 5
    x, y = clustered(c, d, per_class=50, noise=2.5, seed=7, offset=50.0)
    w, b = torch.randn(c, d), torch.randn(c)
    whole = nc_metrics(x, y, c, weight=w, bias=b)
    acc = ClassStats(c, d)
    for start in range(0, x.shape[0], 37):
        acc.update(x[start:start + 37], y[start:start + 37])
    stats = acc.compute()
    ncc = NCCAccumulator(stats.means, w, b)
    for start in range(0, x.shape[0], 37):
        ncc.update(x[start:start + 37])
    assert 0 < whole["nc4"] < 1
    assert ncc.compute() == whole["nc4"]
    streamed = nc_metrics_from_stats(stats, w, b, ncc_mismatch=ncc.compute())
    assert streamed == pytest.approx({k: v for k, v in whole.items() if k != "ncc_acc"}, rel=1e-9)
    assert "nc4" not in nc_metrics_from_stats(stats, w, b)
    assert list(nc_metrics_from_stats(stats)) == BASE_KEYS


def test_empty_class_is_named():
    acc = ClassStats(4, 3)
    acc.update(torch.randn(6, 3), torch.tensor([0, 1, 3, 0, 1, 3]))
    with pytest.raises(ValueError, match=r"class ids: 2\b"):
        acc.compute()


@pytest.mark.parametrize("bad", [-1, 4])
def test_out_of_range_labels(bad):
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\]"):
        ClassStats(4, 3).update(torch.randn(3, 3), torch.tensor([0, bad, 1]))


def test_non_finite_features():
    x = torch.randn(5, 3)
    x[2, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        ClassStats(2, 3).update(x, torch.tensor([0, 1, 0, 1, 0]))
    with pytest.raises(ValueError, match="NaN or Inf"):
        nc_metrics(x, torch.tensor([0, 1, 0, 1, 0]), 2)


def test_wrong_shapes():
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        ClassStats(2, 3).update(torch.randn(4, 5), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="one label per feature row"):
        ClassStats(2, 3).update(torch.randn(4, 3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="integer tensor"):
        ClassStats(2, 3).update(torch.randn(4, 3), torch.zeros(4))
    x, y = clustered(3, 4, per_class=5, noise=1.0, seed=8)
    with pytest.raises(ValueError, match=r"weight must be a tensor of shape \(3, 4\)"):
        nc_metrics(x, y, 3, weight=torch.randn(4, 3))


def test_constant_features_are_refused():
    with pytest.raises(ValueError, match="same mean"):
        nc_metrics(torch.ones(6, 3), torch.tensor([0, 1, 2, 0, 1, 2]), 3)


def test_update_leaves_the_callers_features_untouched():
    x = torch.randn(8, 3, dtype=torch.float64) + 100.0
    before = x.clone()
    ClassStats(2, 3).update(x, torch.tensor([0, 1] * 4))
    assert torch.equal(x, before)


def test_the_one_list_of_metrics_is_what_every_table_reads():
    from metrics.nc import NC_METRICS, metric_keys

    x, y = torch.randn(60, 5, dtype=torch.float64), torch.arange(60) % 3
    w, b = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    assert list(nc_metrics(x, y, 3)) == [m.key for m in NC_METRICS if m.needs in ("stats", "labels")]
    assert list(nc_metrics(x, y, 3, w, b)) == [m.key for m in NC_METRICS]
    assert metric_keys(collapse=True) == ["nc1", "nc1_cdnv", "vci"]
    assert metric_keys(log_scale=True) == ["nc1", "nc1_cdnv"]
    assert set(metric_keys(table=True)) >= {"nc1", "vci", "nc3", "nc4", "bias_collapse"}
    from evaluate.nc import TABLE_COLUMNS
    from evaluate.transfer import COLLAPSE_KEYS
    from study.vci_study import METRICS
    from train.monitor import COLLAPSE_METRICS
    assert TABLE_COLUMNS[-len(metric_keys(table=True)):] == metric_keys(table=True)
    assert list(COLLAPSE_KEYS) == list(COLLAPSE_METRICS) == list(METRICS) == metric_keys(collapse=True)


def test_ncc_accuracy_against_given_centres_and_nc5_against_independent_formulas():
    from metrics.nc import class_means, nc5, stream_nc_metrics

    c, d = 4, 6
    x, y = clustered(c, d, per_class=40, noise=3.0, seed=11, offset=2.0)
    xt, yt = clustered(c, d, per_class=25, noise=3.0, seed=12, offset=2.0)
    train_means = class_means(lambda: [(x, y)], c, d)
    np.testing.assert_allclose(train_means.numpy(), ref_stats(x.numpy(), y.numpy(), c)[0], rtol=1e-12)
    got = stream_nc_metrics(lambda: [(xt[:50], yt[:50]), (xt[50:], yt[50:])], c, d, centres=train_means)
    dist = ((xt.double()[:, None, :] - train_means[None]) ** 2).sum(-1)
    assert got["ncc_acc"] == pytest.approx(float((dist.argmin(1) == yt).double().mean()), abs=0)
    assert 0 < got["ncc_acc"] < 1
    own = stream_nc_metrics(lambda: [(xt, yt)], c, d)["ncc_acc"]
    assert own != got["ncc_acc"]  # the test split's own means are another rule
    # nc5 by hand: three class means against an OOD mean
    means = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]], dtype=torch.float64)
    ood = torch.tensor([1.0, 1.0], dtype=torch.float64)
    assert nc5(means, ood) == pytest.approx((2 ** -0.5 + 2 ** -0.5 + 1.0) / 3, rel=1e-15)
    assert nc5(torch.eye(3, dtype=torch.float64)[:2], torch.tensor([0.0, 0.0, 5.0], dtype=torch.float64)) == 0.0
    m, o = np.random.default_rng(0).normal(size=(5, 7)), np.random.default_rng(1).normal(size=7)
    cos = [abs(row @ o) / (np.linalg.norm(row) * np.linalg.norm(o)) for row in m]
    assert nc5(torch.from_numpy(m), torch.from_numpy(o)) == pytest.approx(float(np.mean(cos)), rel=1e-12)
    with pytest.raises(ValueError, match="non-zero"):
        nc5(means, torch.zeros(2, dtype=torch.float64))
