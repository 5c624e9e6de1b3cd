"""OOD scorers: formulas against independent references, direction, batching, errors."""
import numpy as np
import pytest
import torch
from scipy.special import logsumexp as scipy_logsumexp
from scipy.stats import multivariate_normal
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from ood import JITTER_LADDER, SCORERS, build_scorer, detection_metrics

DIM, CLASSES, SPREAD = 16, 4, 5.0
ORIGINAL = ["msp", "maxlogit", "energy", "gmm", "mahalanobis", "knn", "vim", "neco"]  # the zoo: tests/test_ood_zoo*.py


def make_data(seed=0, train_per_class=100, test_per_class=50, num_ood=200):
    """ID: Gaussian clusters at SPREAD * e_c, variance 1 in dims 0-7 and 0.01 in dims 8-15.

    OOD: no class mean (origin), variance 1 in dims 0-7 and 4 in dims 8-15 - far from every
    cluster, off the ID subspace, with low logits. Classifier: W = class means, b = -||mu||^2/2
    (the Bayes-optimal linear rule for these clusters).
    """
    gen = torch.Generator().manual_seed(seed)
    means = SPREAD * torch.eye(CLASSES, DIM, dtype=torch.float64)
    id_scale = torch.cat([torch.ones(8), torch.full((8,), 0.1)]).double()
    ood_scale = torch.cat([torch.ones(8), torch.full((8,), 2.0)]).double()

    def id_samples(per_class):
        labels = torch.arange(CLASSES).repeat_interleave(per_class)
        noise = torch.randn(labels.numel(), DIM, generator=gen, dtype=torch.float64) * id_scale
        return means[labels] + noise, labels

    train, train_labels = id_samples(train_per_class)
    test, _ = id_samples(test_per_class)
    ood = torch.randn(num_ood, DIM, generator=gen, dtype=torch.float64) * ood_scale
    weight = means.clone()
    bias = -0.5 * means.square().sum(dim=1)
    return dict(train=train, labels=train_labels, test=test, ood=ood, weight=weight, bias=bias)


@pytest.fixture(scope="module")
def data():
    return make_data()


@pytest.mark.parametrize("name", ORIGINAL)
def test_every_scorer_detects_shifted_ood_in_the_right_direction(data, name):
    scorer = build_scorer(name).fit(data["train"], data["labels"], weight=data["weight"], bias=data["bias"])
    id_scores, ood_scores = scorer.score(data["test"]), scorer.score(data["ood"])
    assert id_scores.shape == (data["test"].shape[0],) and id_scores.dtype == torch.float64
    assert torch.isfinite(id_scores).all() and torch.isfinite(ood_scores).all()
    assert detection_metrics(id_scores, ood_scores)["auroc"] > 0.95
    assert detection_metrics(ood_scores, id_scores)["auroc"] < 0.05


def test_registry_names_and_errors():
    assert list(SCORERS)[:8] == ORIGINAL and len(SCORERS) == 22
    with pytest.raises(ValueError, match="valid names: msp, maxlogit, energy, gmm, mahalanobis, knn, vim, neco, react"):
        build_scorer("odin")
    with pytest.raises(ValueError, match="has no option 'kk'; its options are: K, batch_size"):
        build_scorer("knn", kk=3)
    assert build_scorer("energy", temperature=2.0).temperature == 2.0
    assert build_scorer("knn", k=7).K == 7 and build_scorer("knn").K == 50  # k: the former keyword


def test_logit_scorers_formulas_and_logit_sources(data):
    logits = data["test"] @ data["weight"].T + data["bias"]
    expected = {
        "msp": torch.softmax(logits, dim=1).amax(dim=1),
        "maxlogit": logits.amax(dim=1),
        "energy": torch.logsumexp(logits, dim=1),
    }
    for name, reference in expected.items():
        from_weights = build_scorer(name).fit(None, None, weight=data["weight"], bias=data["bias"])
        torch.testing.assert_close(from_weights.score(data["test"]), reference, rtol=1e-12, atol=1e-12)
        from_logits = build_scorer(name).fit(None, None)
        torch.testing.assert_close(from_logits.score(None, logits=logits), reference, rtol=0, atol=0)
        with pytest.raises(ValueError, match="needs logits"):
            from_logits.score(data["test"])
    t = 3.0
    tempered = build_scorer("energy", temperature=t).fit(None, None).score(None, logits=logits)
    torch.testing.assert_close(tempered, t * torch.logsumexp(logits / t, dim=1))


def test_gmm_log_densities_match_scipy(data):
    scorer = build_scorer("gmm").fit(data["train"], data["labels"])
    assert scorer.jitter == 0.0  # 100 samples per class in 16 dims: every covariance is PD
    queries = torch.cat([data["test"][:40], data["ood"][:40]])
    x, y, q = data["train"].numpy(), data["labels"].numpy(), queries.numpy()
    reference = np.stack([
        multivariate_normal(mean=x[y == c].mean(axis=0), cov=np.cov(x[y == c], rowvar=False)).logpdf(q)
        for c in range(CLASSES)], axis=1)
    np.testing.assert_allclose(scorer.log_densities(queries).numpy(), reference, rtol=1e-8)
    np.testing.assert_allclose(scorer.score(queries).numpy(), scipy_logsumexp(reference, axis=1), rtol=1e-8)


def test_gmm_rescues_classes_with_fewer_samples_than_dimensions():
    gen = torch.Generator().manual_seed(1)
    labels = torch.tensor([0] * 5 + [1] * 40 + [2] * 40)  # class 0: 5 samples in 16 dimensions
    features = torch.randn(labels.numel(), DIM, generator=gen, dtype=torch.float64) + 3.0 * labels[:, None]
    scorer = build_scorer("gmm").fit(features, labels)
    assert scorer.jitter > 0.0
    covariances = torch.stack([torch.cov(features[labels == c].T) for c in range(3)])  # 1/(n_c - 1)
    eye = torch.eye(DIM, dtype=torch.float64)
    assert (torch.linalg.cholesky_ex(covariances + scorer.jitter * eye).info == 0).all()
    previous = JITTER_LADDER[JITTER_LADDER.index(scorer.jitter) - 1]  # the smallest that works
    assert (torch.linalg.cholesky_ex(covariances + previous * eye).info != 0).any()
    scores = scorer.score(torch.randn(30, DIM, generator=gen, dtype=torch.float64))
    assert torch.isfinite(scores).all()


@pytest.mark.parametrize("per_class,dim", [(40, 64), (200, 24)])  # singular (jitter rescues) and full-rank covariances
def test_gmm_scores_equal_the_multivariate_normal_reference(per_class, dim):
    """DDU's computation: MultivariateNormal(means, covariances + jitter I).log_prob, logsumexp over classes."""
    gen = torch.Generator().manual_seed(2)
    labels = torch.arange(6).repeat_interleave(per_class)
    means = 3.0 * torch.randn(6, dim, generator=gen, dtype=torch.float64)
    features = means[labels] + torch.randn(labels.numel(), dim, generator=gen, dtype=torch.float64)
    queries = torch.cat([means[torch.arange(50) % 6] + torch.randn(50, dim, generator=gen, dtype=torch.float64),
                         3.0 * torch.randn(50, dim, generator=gen, dtype=torch.float64)])
    scorer = build_scorer("gmm", batch_size=32).fit(features, labels)
    assert (scorer.jitter > 0) == (per_class <= dim)
    covariances = torch.stack([torch.cov(features[labels == c].T) for c in range(6)])
    reference = torch.distributions.MultivariateNormal(
        torch.stack([features[labels == c].mean(0) for c in range(6)]),
        covariance_matrix=covariances + scorer.jitter * torch.eye(dim, dtype=torch.float64))
    expected = torch.logsumexp(reference.log_prob(queries[:, None, :]), dim=1)
    torch.testing.assert_close(scorer.score(queries), expected, rtol=1e-6 if per_class <= dim else 1e-10, atol=0)


def test_gmm_rejects_a_class_with_one_sample():
    features = torch.randn(7, 3, dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2])
    with pytest.raises(ValueError, match="class 2 has 1 training sample.*at least 2"):
        build_scorer("gmm").fit(features, labels)


@pytest.mark.parametrize("name", ["gmm", "mahalanobis", "knn"])
def test_scoring_in_batches_equals_one_batch(data, name):
    queries = torch.cat([data["test"], data["ood"]])
    small = build_scorer(name, batch_size=7).fit(data["train"], data["labels"]).score(queries)
    whole = build_scorer(name, batch_size=10**6).fit(data["train"], data["labels"]).score(queries)
    torch.testing.assert_close(small, whole, rtol=1e-14, atol=0)


def test_knn_is_the_kth_neighbour_distance_and_clamps_k(data):
    train = data["train"] / data["train"].norm(dim=1, keepdim=True)
    queries = data["ood"][:20] / data["ood"][:20].norm(dim=1, keepdim=True)
    kth = torch.cdist(queries, train).sort(dim=1).values[:, 9]
    scores = build_scorer("knn", K=10).fit(data["train"], data["labels"]).score(data["ood"][:20])
    torch.testing.assert_close(scores, -kth, rtol=1e-10, atol=1e-10)
    farthest = torch.cdist(queries, train).amax(dim=1)
    clamped = build_scorer("knn", K=10**6).fit(data["train"], data["labels"]).score(data["ood"][:20])
    torch.testing.assert_close(clamped, -farthest, rtol=1e-10, atol=1e-10)


def test_mahalanobis_matches_tied_covariance_formula(data):
    x, y = data["train"].numpy(), data["labels"].numpy()
    means = np.stack([x[y == c].mean(axis=0) for c in range(CLASSES)])
    centred = x - means[y]
    precision = np.linalg.inv(centred.T @ centred / len(x))
    q = data["ood"][:30].numpy()
    diffs = q[:, None, :] - means[None]
    reference = -np.einsum("ncd,de,nce->nc", diffs, precision, diffs).min(axis=1)
    scores = build_scorer("mahalanobis").fit(data["train"], data["labels"]).score(data["ood"][:30])
    np.testing.assert_allclose(scores.numpy(), reference, rtol=1e-9)


def test_vim_matches_the_paper_formula(data):
    w, b, x = data["weight"].numpy(), data["bias"].numpy(), data["train"].numpy()
    dim = 6
    u = -np.linalg.pinv(w) @ b
    eigvals, eigvecs = np.linalg.eigh((x - u).T @ (x - u) / len(x))
    null_space = eigvecs[:, np.argsort(-eigvals)[dim:]]
    alpha = (x @ w.T + b).max(axis=1).mean() / np.linalg.norm((x - u) @ null_space, axis=1).mean()
    q = torch.cat([data["test"][:20], data["ood"][:20]]).numpy()
    reference = scipy_logsumexp(q @ w.T + b, axis=1) - alpha * np.linalg.norm((q - u) @ null_space, axis=1)
    scorer = build_scorer("vim", dim=dim).fit(data["train"], data["labels"], weight=data["weight"], bias=data["bias"])
    np.testing.assert_allclose(scorer.score(torch.from_numpy(q)).numpy(), reference, rtol=1e-9)
    with pytest.raises(ValueError, match="vim needs the classifier"):
        build_scorer("vim").fit(data["train"], data["labels"])


def test_neco_matches_standard_scaler_and_pca(data):
    x, q = data["train"].numpy(), torch.cat([data["test"][:20], data["ood"][:20]]).numpy()
    scaler = StandardScaler().fit(x)
    pca = PCA(n_components=DIM).fit(scaler.transform(x))
    scaled = scaler.transform(q)
    ratio = np.linalg.norm(pca.transform(scaled)[:, : CLASSES - 1], axis=1) / np.linalg.norm(scaled, axis=1)
    plain = build_scorer("neco", use_max_logit=False).fit(data["train"], data["labels"])
    assert plain.fitted_dim == CLASSES - 1
    np.testing.assert_allclose(plain.score(torch.from_numpy(q)).numpy(), ratio, rtol=1e-9)
    with_logits = build_scorer("neco").fit(data["train"], data["labels"], weight=data["weight"], bias=data["bias"])
    max_logit = (q @ data["weight"].numpy().T + data["bias"].numpy()).max(axis=1)
    np.testing.assert_allclose(with_logits.score(torch.from_numpy(q)).numpy(), ratio * max_logit, rtol=1e-9)


def test_input_errors(data):
    scorer = build_scorer("mahalanobis")
    with pytest.raises(ValueError, match="not fitted"):
        scorer.score(data["test"])
    with pytest.raises(ValueError, match="needs train_labels"):
        scorer.fit(data["train"], None)
    scorer.fit(data["train"], data["labels"])
    with pytest.raises(ValueError, match="dimension 3 but the scorer was fitted on dimension 16"):
        scorer.score(torch.zeros(2, 3, dtype=torch.float64))
    bad = data["test"][:3].clone()
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        scorer.score(bad)
    with pytest.raises(ValueError, match="pass features"):
        scorer.score(None, logits=torch.zeros(2, CLASSES, dtype=torch.float64))


@pytest.mark.filterwarnings("ignore:nnguide. its bank")  # the fixture is sorted by class
def test_float32_features_give_float64_scores_on_the_input_device(data):
    for name in SCORERS:
        scorer = build_scorer(name).fit(data["train"].float(), data["labels"],
                                        weight=data["weight"].float(), bias=data["bias"].float())
        scores = scorer.score(data["test"][:5].float())
        assert scores.dtype == torch.float64 and scores.device == data["test"].device
