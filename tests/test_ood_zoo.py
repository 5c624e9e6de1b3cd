"""The post-hoc zoo's scorers against their formulas, each written out independently in numpy/scipy."""
import numpy as np
import pytest
import torch
from scipy.special import logsumexp, softmax
from scipy.stats import entropy

from ood import build_scorer

D, C, UNITS = 32, 4, 8


def make_zoo_data(seed=0):
    """Post-ReLU-like ID features (class c lifts units 8c..8c+7), balanced and shuffled; OOD = small
    positive noise.

    Classifier: rows aligned with the class units, small random bias. Features are strictly
    positive (no ties among the largest units)."""
    rng = np.random.default_rng(seed)
    centres = np.zeros((C, D))
    for c in range(C):
        centres[c, UNITS * c:UNITS * (c + 1)] = 4.0

    def id_rows(n):
        labels = rng.permutation(np.arange(n) % C)  # balanced classes
        return np.abs(centres[labels] + rng.normal(0, 0.7, (n, D))) + 0.01, labels

    train, labels = id_rows(240)
    val, val_labels = id_rows(90)
    test, _ = id_rows(60)
    ood = np.abs(rng.normal(0, 0.8, (60, D))) + 0.01
    weight = centres / 4.0 + rng.normal(0, 0.05, (C, D))
    bias = rng.normal(0, 0.2, C)
    return dict(train=train, labels=labels, val=val, val_labels=val_labels, test=test, ood=ood,
                queries=np.concatenate([test[:20], ood[:20]]), weight=weight, bias=bias)


@pytest.fixture(scope="module")
def zoo():
    return make_zoo_data()


def t(array):
    return torch.from_numpy(np.asarray(array))


def fitted(zoo, name, split="train", **options):
    x, y = (zoo["train"], zoo["labels"]) if split == "train" else (zoo["val"], zoo["val_labels"])
    return build_scorer(name, **options).fit(t(x), t(y), weight=t(zoo["weight"]), bias=t(zoo["bias"]))


def ours(zoo, name, split="train", **options):
    return fitted(zoo, name, split, **options).score(t(zoo["queries"])).numpy()


def logits(zoo, x):
    return x @ zoo["weight"].T + zoo["bias"]


@pytest.mark.parametrize("percentile", [90, 85])
def test_react_is_the_energy_of_activations_clipped_at_the_validation_percentile(zoo, percentile):
    threshold = np.percentile(zoo["val"], percentile)  # over all entries, linear
    expected = logsumexp(logits(zoo, np.minimum(zoo["queries"], threshold)), axis=1)
    np.testing.assert_allclose(ours(zoo, "react", "val", percentile=percentile), expected, rtol=1e-12)


@pytest.mark.parametrize("high,low", [(90, 10), (95, 50)])
def test_vra_clips_to_the_percentile_band(zoo, high, low):
    lo, hi = np.percentile(zoo["val"], low), np.percentile(zoo["val"], high)
    expected = logsumexp(logits(zoo, np.clip(zoo["queries"], lo, hi)), axis=1)
    np.testing.assert_allclose(ours(zoo, "vra", "val", percentile_high=high, percentile_low=low), expected, rtol=1e-12)


def top_units(x, k):
    return np.argsort(-x)[:k]


@pytest.mark.parametrize("percentile", [90, 65])
def test_ash_b_fills_the_top_k_units_with_the_mean_mass(zoo, percentile):
    k = D - int(np.round(D * percentile / 100))
    shaped = np.zeros_like(zoo["queries"])
    for i, row in enumerate(zoo["queries"]):
        shaped[i, top_units(row, k)] = row.sum() / k
    expected = logsumexp(logits(zoo, shaped), axis=1)
    np.testing.assert_allclose(ours(zoo, "ash", percentile=percentile), expected, rtol=1e-12)


@pytest.mark.parametrize("percentile", [85, 65])
def test_scale_multiplies_the_logits_without_bias_by_exp_of_the_mass_ratio(zoo, percentile):
    k = D - int(np.round(D * percentile / 100))
    ratio = np.array([row.sum() / row[top_units(row, k)].sum() for row in zoo["queries"]])
    expected = logsumexp(np.exp(ratio)[:, None] * (zoo["queries"] @ zoo["weight"].T) + zoo["bias"], axis=1)
    np.testing.assert_allclose(ours(zoo, "scale", percentile=percentile), expected, rtol=1e-12)


@pytest.mark.parametrize("p", [90, 70])
def test_dice_masks_weights_whose_contribution_exceeds_the_percentile(zoo, p):
    contribution = zoo["train"].mean(axis=0)[None, :] * zoo["weight"]
    masked = np.where(contribution > np.percentile(contribution, p), zoo["weight"], 0.0)
    expected = logsumexp(zoo["queries"] @ masked.T + zoo["bias"], axis=1)
    np.testing.assert_allclose(ours(zoo, "dice", p=p), expected, rtol=1e-12)


@pytest.mark.parametrize("gamma,m", [(0.1, 100), (2.0, 2)])
def test_gen_is_minus_the_generalized_entropy_of_the_top_m(zoo, gamma, m):
    probs = np.sort(softmax(logits(zoo, zoo["queries"]), axis=1), axis=1)[:, -m:]
    expected = -(probs ** gamma * (1 - probs) ** gamma).sum(axis=1)
    np.testing.assert_allclose(ours(zoo, "gen", gamma=gamma, M=m), expected, rtol=1e-12)


def test_klm_matches_scipy_kl_to_the_templates_of_predicted_classes(zoo):
    bias = zoo["bias"].copy()
    bias[3] = -1e3  # class 3 is never predicted: its template is the one-hot e_3
    data = {**zoo, "bias": bias}
    val_probs = softmax(logits(data, zoo["val"]), axis=1)
    predicted = val_probs.argmax(axis=1)
    templates = [val_probs[predicted == c].mean(axis=0) if (predicted == c).any() else np.eye(C)[c] for c in range(C)]
    probs = softmax(logits(data, zoo["queries"]), axis=1)
    expected = np.array([-min(entropy(p, q) for q in templates) for p in probs])
    np.testing.assert_allclose(ours(data, "klm", "val"), expected, rtol=1e-10, atol=1e-12)


def test_rmds_is_the_class_distance_relative_to_the_background_distance(zoo):
    x, y, q = zoo["train"], zoo["labels"], zoo["queries"]
    means = np.stack([x[y == c].mean(axis=0) for c in range(C)])
    within = np.linalg.pinv((x - means[y]).T @ (x - means[y]) / len(x))
    whole = np.linalg.pinv(np.cov(x.T, bias=True))
    class_d = np.stack([np.einsum("nd,de,ne->n", q - m, within, q - m) for m in means], axis=1)
    background = np.einsum("nd,de,ne->n", q - x.mean(axis=0), whole, q - x.mean(axis=0))
    np.testing.assert_allclose(ours(zoo, "rmds"), (-class_d).max(axis=1) + background, rtol=1e-9)


@pytest.mark.parametrize("metric", ["inner_product", "euclidean", "cosine"])
def test_she_compares_with_the_pattern_of_correctly_predicted_training_samples(zoo, metric):
    x, y = zoo["train"], zoo["labels"]
    correct = logits(zoo, x).argmax(axis=1) == y
    patterns = np.stack([x[correct & (y == c)].mean(axis=0) for c in range(C)])
    q = zoo["queries"]
    m = patterns[logits(zoo, q).argmax(axis=1)]
    expected = {"inner_product": (q * m).sum(axis=1), "euclidean": -np.linalg.norm(q - m, axis=1),
                "cosine": (q * m).sum(axis=1) / (np.linalg.norm(q, axis=1) * np.linalg.norm(m, axis=1))}[metric]
    np.testing.assert_allclose(ours(zoo, "she", metric=metric), expected, rtol=1e-12)


@pytest.mark.parametrize("power", [1, 4])
def test_relation_sums_the_graph_edges_above_the_cutoff(zoo, power):
    def unit(a):
        return a / np.sqrt((a ** 2).sum(axis=1, keepdims=True) + 1e-10)

    x, q = zoo["train"], zoo["queries"]
    edges = np.maximum(unit(q) @ unit(x).T, 0) * (softmax(logits(zoo, q), axis=1) @ softmax(logits(zoo, x), axis=1).T)
    expected = np.where(edges > 0.03, edges ** power, 0.0).sum(axis=1)
    np.testing.assert_allclose(ours(zoo, "relation", pow=power, batch_size=7), expected, rtol=1e-12)


@pytest.mark.parametrize("k,alpha", [(100, 0.01), (5, 0.1)])
def test_nnguide_guides_the_energy_by_the_energy_scaled_bank(zoo, k, alpha):
    bank = zoo["train"][: int(alpha * len(zoo["train"])) + 1]  # OpenOOD's rule at loader batch size 1
    guide = bank / np.linalg.norm(bank, axis=1, keepdims=True) * logsumexp(logits(zoo, bank), axis=1)[:, None]
    q = zoo["queries"]
    similarity = np.sort((q / np.linalg.norm(q, axis=1, keepdims=True)) @ guide.T, axis=1)[:, -k:]
    expected = similarity.mean(axis=1) * logsumexp(logits(zoo, q), axis=1)
    np.testing.assert_allclose(ours(zoo, "nnguide", K=k, alpha=alpha), expected, rtol=1e-8)


@pytest.mark.parametrize("by_distance", [True, False])
def test_fdbd_averages_distances_to_the_decision_boundaries(zoo, by_distance):
    w, mu = zoo["weight"], zoo["train"].mean(axis=0)
    expected = []
    for h, z in zip(zoo["queries"], logits(zoo, zoo["queries"])):
        pred = z.argmax()
        total = sum(abs(z[c] - z[pred]) / np.linalg.norm(w[c] - w[pred]) for c in range(C) if c != pred)
        expected.append(total / np.linalg.norm(h - mu if by_distance else h))
    np.testing.assert_allclose(ours(zoo, "fdbd", distance_as_normalizer=by_distance), expected, rtol=1e-12)


@pytest.mark.parametrize("alpha", [1e-4, 0.1])
def test_nci_is_the_predicted_weight_alignment_plus_the_l1_norm(zoo, alpha):
    mu, q = zoo["train"].mean(axis=0), zoo["queries"]
    w_pred = zoo["weight"][logits(zoo, q).argmax(axis=1)]
    expected = (w_pred * (q - mu)).sum(axis=1) / np.linalg.norm(q - mu, axis=1) + alpha * np.abs(q).sum(axis=1)
    np.testing.assert_allclose(ours(zoo, "nci", alpha=alpha), expected, rtol=1e-12)


def test_gradnorm_equals_the_autograd_gradient_norm_of_the_last_layer(zoo):
    expected = []
    for h in zoo["queries"][:10]:
        weight = t(zoo["weight"]).clone().requires_grad_(True)
        out = torch.log_softmax(weight @ t(h) + t(zoo["bias"]), dim=0)
        (-out.sum()).backward()  # cross-entropy against an all-ones target, as OpenOOD
        expected.append(weight.grad.abs().sum().item())
    scorer = build_scorer("gradnorm").fit(None, None, weight=t(zoo["weight"]), bias=t(zoo["bias"]))
    np.testing.assert_allclose(scorer.score(t(zoo["queries"][:10])).numpy(), expected, rtol=1e-12)
    from_logits = build_scorer("gradnorm").fit(None, None).score(t(zoo["queries"][:10]),
                                                                   logits=t(logits(zoo, zoo["queries"][:10])))
    np.testing.assert_allclose(from_logits.numpy(), expected, rtol=1e-12)
