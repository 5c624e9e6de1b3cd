"""The zoo's registry (options, command-line specs, search grids, declared attributes) and the
scorers' behaviour: direction, options that act, batching, refusals and degenerate-fit warnings."""
import re
import warnings

import numpy as np
import pytest
import torch

from ood import SCORERS, Scorer, build_scorer, detection_metrics, parse_scorer_spec, scorer_options, search_candidates
from tests.test_ood_zoo import C, fitted, make_zoo_data, t

ZOO = ["react", "ash", "scale", "dice", "gen", "klm", "rmds", "she", "relation", "nnguide", "vra", "fdbd", "nci",
       "gradnorm"]

# OpenOOD v1.5's postprocessor_args (configs/postprocessors/<name>.yml) and the split its setup reads.
OPENOOD = {
    "react": ({"percentile": 90}, "val"), "ash": ({"percentile": 90}, "train"),
    "scale": ({"percentile": 85}, "train"), "dice": ({"p": 90}, "train"),
    "gen": ({"gamma": 0.1, "M": 100}, "train"), "klm": ({}, "val"), "rmds": ({}, "train"),
    "she": ({"metric": "inner_product"}, "train"), "relation": ({"pow": 1}, "train"),
    "nnguide": ({"K": 100, "alpha": 0.01}, "train"),
    "vra": ({"percentile_high": 90, "percentile_low": 10}, "val"),
    "fdbd": ({"distance_as_normalizer": True}, "train"), "nci": ({"alpha": 1e-4}, "train"),
    "gradnorm": ({}, "train"), "knn": ({"K": 50}, "train"), "energy": ({"temperature": 1.0}, "train"),
}


@pytest.fixture(scope="module")
def zoo():
    return make_zoo_data()


def test_the_registry_holds_22_scorers_each_declaring_its_attributes_and_citing_its_paper():
    assert list(SCORERS)[8:] == ZOO and len(SCORERS) == 22
    for name, cls in SCORERS.items():
        for attribute in ("search_space", "fit_split", "uses_classifier"):  # declared by the scorer or its family
            assert next(k for k in cls.__mro__ if attribute in vars(k)) is not Scorer, (name, attribute)
        assert cls.fit_split in ("train", "val") and isinstance(cls.uses_classifier, bool)
        assert set(cls.search_space) <= set(scorer_options(name)), name
        assert cls().name == name
        doc = cls.__doc__
        assert "score" in doc and re.search(r"(19|20)\d\d", doc), name
    for name, (args, split) in OPENOOD.items():
        options = scorer_options(name)
        assert {key: options[key] for key in args} == args, name
        assert SCORERS[name].fit_split == split, name
    assert [n for n, c in SCORERS.items() if not c.uses_classifier] == ["gmm", "mahalanobis", "knn", "rmds"]


def test_parse_scorer_spec_converts_to_the_option_types():
    assert parse_scorer_spec("react") == ("react", {})
    assert parse_scorer_spec("ash:percentile=65") == ("ash", {"percentile": 65})
    assert parse_scorer_spec("gen:gamma=0.1,M=50") == ("gen", {"gamma": 0.1, "M": 50})
    assert parse_scorer_spec("fdbd:distance_as_normalizer=false") == ("fdbd", {"distance_as_normalizer": False})
    assert parse_scorer_spec("fdbd:distance_as_normalizer=True")[1] == {"distance_as_normalizer": True}
    assert parse_scorer_spec("nci:alpha=1e-3") == ("nci", {"alpha": 0.001})
    assert parse_scorer_spec("she:metric=cosine") == ("she", {"metric": "cosine"})
    assert parse_scorer_spec("knn:k=10") == ("knn", {"K": 10})
    assert parse_scorer_spec("vim:dim=none") == ("vim", {"dim": None})
    assert parse_scorer_spec("vim:dim=128") == ("vim", {"dim": 128})
    name, options = parse_scorer_spec("vra:percentile_high=95,percentile_low=5")
    assert build_scorer(name, **options).percentile_low == 5


@pytest.mark.parametrize("text,message", [
    ("odin", r"unknown OOD scorer 'odin'; valid names: msp, maxlogit, .*, gradnorm$"),
    ("ash:q=3", r"'ash' has no option 'q'; its options are: percentile$"),
    ("gen:M=5.5", r"'gen' option M expects an int, got '5.5'"),
    ("gen:gamma=big", r"'gen' option gamma expects a float, got 'big'"),
    ("fdbd:distance_as_normalizer=1", r"distance_as_normalizer expects true or false, got '1'"),
    ("react:percentile", r"'percentile' is not option=value"),
])
def test_parse_scorer_spec_errors_are_one_line(text, message):
    with pytest.raises(ValueError, match=message) as error:
        parse_scorer_spec(text)
    assert "\n" not in str(error.value)


def test_search_candidates_are_openood_grids_with_the_defaults_first():
    react = search_candidates("react")
    assert react == [{"percentile": 90}, {"percentile": 85}, {"percentile": 95}, {"percentile": 99}]
    gen = search_candidates("gen")
    assert len(gen) == 7 * 6 and gen[0] == {"gamma": 0.1, "M": 100}
    assert gen[1:3] == [{"gamma": 0.01, "M": 10}, {"gamma": 0.1, "M": 10}]  # gamma varies fastest, as OpenOOD
    assert len({tuple(sorted(c.items())) for c in gen}) == len(gen)
    assert search_candidates("vra")[0] == {"percentile_high": 90, "percentile_low": 10} and len(search_candidates("vra")) == 16
    assert search_candidates("fdbd") == [{"distance_as_normalizer": True}, {"distance_as_normalizer": False}]
    assert search_candidates("knn") == [{"K": k} for k in (50, 100, 200, 500, 1000)]
    assert search_candidates("vim") == [{"dim": None}, {"dim": 256}, {"dim": 1000}]
    for name in ("msp", "klm", "rmds", "gradnorm", "she", "gmm"):
        assert search_candidates(name) == [{}]
    assert search_candidates("nnguide") == [{"K": 100, "alpha": 0.01}] and search_candidates("dice") == [{"p": 90}]


@pytest.mark.parametrize("name", list(SCORERS))
def test_every_scorer_ranks_id_above_ood(zoo, name):
    split = SCORERS[name].fit_split
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the data is not degenerate: no warning
        scorer = fitted(zoo, name, split)
    id_scores, ood_scores = scorer.score(t(zoo["test"])), scorer.score(t(zoo["ood"]))
    assert id_scores.dtype == torch.float64 and torch.isfinite(id_scores).all() and torch.isfinite(ood_scores).all()
    assert detection_metrics(id_scores, ood_scores)["auroc"] > 0.95


@pytest.mark.parametrize("name,changed,base", [
    ("react", {"percentile": 70}, {}), ("ash", {"percentile": 65}, {}), ("scale", {"percentile": 65}, {}),
    ("dice", {"p": 70}, {}), ("gen", {"gamma": 1.0}, {}), ("gen", {"M": 2}, {}), ("she", {"metric": "cosine"}, {}),
    ("relation", {"pow": 4}, {}), ("nnguide", {"K": 3}, {"alpha": 0.5}), ("nnguide", {"alpha": 0.2}, {}),
    ("vra", {"percentile_high": 99}, {}), ("vra", {"percentile_low": 40}, {}),
    ("fdbd", {"distance_as_normalizer": False}, {}), ("nci", {"alpha": 0.1}, {}),
])
def test_options_change_the_scores(zoo, name, changed, base):
    queries = t(zoo["queries"])
    default = fitted(zoo, name, "val", **base).score(queries)
    other = fitted(zoo, name, "val", **{**base, **changed}).score(queries)
    assert not torch.allclose(default, other, rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", ["rmds", "relation", "nnguide"])
def test_scoring_in_batches_equals_one_batch(zoo, name):
    queries = t(np.concatenate([zoo["test"], zoo["ood"]]))
    small = fitted(zoo, name, alpha=0.5, batch_size=7) if name == "nnguide" else fitted(zoo, name, batch_size=7)
    whole = fitted(zoo, name, alpha=0.5, batch_size=10**6) if name == "nnguide" else fitted(zoo, name, batch_size=10**6)
    torch.testing.assert_close(small.score(queries), whole.score(queries), rtol=1e-13, atol=1e-13)


def test_scorers_that_cannot_work_say_why_in_one_line(zoo):
    w, b, x, y = t(zoo["weight"]), t(zoo["bias"]), t(zoo["train"]), t(zoo["labels"])
    cases = [
        (lambda: build_scorer("react").fit(x, y), "react needs the classifier"),
        (lambda: build_scorer("gen").fit(None, None).score(x), "needs logits"),
        (lambda: build_scorer("ash", percentile=100).fit(None, None, weight=w, bias=b), "keeps no unit"),
        (lambda: build_scorer("scale").fit(None, None, weight=w, bias=b).score(-x), "non-positive sum of their top"),
        (lambda: build_scorer("dice", p=100).fit(x, y, weight=w, bias=b), "mask would remove every weight"),
        (lambda: build_scorer("fdbd").fit(x, y, weight=torch.cat([w[:3], w[:1]]), bias=b), "rows 0 and 3 are identical"),
        (lambda: build_scorer("she").fit(x, y, weight=w, bias=b + torch.tensor([0, 0, 0, -1e3])), r"class\(es\) 3 have no"),
        (lambda: build_scorer("vra", percentile_high=10, percentile_low=90), "must not exceed"),
        (lambda: build_scorer("react", percentile=101), r"in \[0, 100\]"),
        (lambda: build_scorer("gen", gamma=0), "gamma must be > 0"),
        (lambda: build_scorer("nnguide", alpha=0), r"alpha must be in \(0, 1\]"),
        (lambda: build_scorer("she", metric="dot"), "metric must be one of"),
        (lambda: build_scorer("relation").fit(x, y, weight=w, bias=b).score(None, logits=x[:, :4]), "pass features"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message) as error:
            call()
        assert "\n" not in str(error.value)


@pytest.mark.parametrize("name", ["knn", "mahalanobis", "rmds", "dice", "nci", "relation"])
def test_identical_training_rows_warn(zoo, name):
    rows = t(np.tile(zoo["train"][:1], (30, 1)))
    with pytest.warns(UserWarning, match=rf"^{name}: all 30 training feature rows are identical; .* constant"):
        build_scorer(name).fit(rows, t(zoo["labels"][:30]), weight=t(zoo["weight"]), bias=t(zoo["bias"]))


def test_zero_within_class_spread_warns_for_label_scorers(zoo):
    labels = t(np.arange(40) % C)
    rows = t(zoo["train"][:C])[labels]  # every row equals the others of its class
    with pytest.warns(UserWarning, match="rmds: every training feature row equals the others of its class"):
        build_scorer("rmds").fit(rows, labels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_scorer("knn").fit(rows, labels)  # no labels used: distinct rows are not degenerate


def test_clip_thresholds_that_flatten_every_activation_warn(zoo):
    sparse = np.zeros((50, zoo["train"].shape[1]))
    sparse[:, 0] = np.linspace(0.1, 5, 50)  # 11 of 12 entries zero: the 10th-90th percentiles are all 0
    w, b = t(zoo["weight"]), t(zoo["bias"])
    with pytest.warns(UserWarning, match="vra: the 10th and 90th percentiles .* are both 0"):
        build_scorer("vra").fit(t(sparse), None, weight=w, bias=b)
    with pytest.warns(UserWarning, match="react: the 90th percentile .* is also their minimum"):
        build_scorer("react").fit(t(sparse), None, weight=w, bias=b)



def test_klm_stays_finite_when_softmax_probabilities_underflow(zoo):
    """Logits 1000 times larger: float64 softmax underflows to exact zeros (scipy's KL is inf for
    such rows); where scipy's KL is finite, the scores are scipy's."""
    from scipy.special import softmax
    from scipy.stats import entropy

    w, b = 1000 * zoo["weight"], 1000 * zoo["bias"]
    val_probs = softmax(zoo["val"] @ w.T + b, axis=1)
    templates = [val_probs[val_probs.argmax(axis=1) == c].mean(axis=0) for c in range(C)]
    probs = softmax(zoo["queries"] @ w.T + b, axis=1)
    reference = np.array([-min(entropy(p, q) for q in templates) for p in probs])
    scores = build_scorer("klm").fit(t(zoo["val"]), None, weight=t(w), bias=t(b)).score(t(zoo["queries"])).numpy()
    assert np.isinf(reference).any() and np.isfinite(scores).all() and (scores <= 1e-12).all()
    finite = np.isfinite(reference)
    np.testing.assert_allclose(scores[finite], reference[finite], rtol=1e-9, atol=1e-12)
