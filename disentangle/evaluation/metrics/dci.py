"""DCI disentanglement, completeness and informativeness (Eastwood & Williams 2018), as
disentanglement_lib's ``dci`` computes them, with a fast gradient-boosting backend."""
from __future__ import annotations

import numpy as np

from disentangle.errors import ParameterError, UserError
from disentangle.evaluation.metrics.utils import (DataSummary, check_codes, check_positive_ints,
                                                  random_state_int, require_choice, require_factor_sample,
                                                  require_int, require_number, sample_points)

BACKENDS = ("lightgbm", "sklearn-gbt")
# max_minutes: not a protocol parameter but a guard (it changes no score): the estimated
# time (:func:`estimate_seconds`) above which DCI is refused before any work
DEFAULTS = {"num_train": 10_000, "num_test": 5_000, "batch_size": 16, "backend": "lightgbm",
            "max_minutes": 30.0}


def check_params(params: dict) -> None:
    """Every parameter's value (ParameterError naming ``dci.KEY``), and that the chosen
    backend's package is installed."""
    import importlib.util
    for key in ("num_train", "num_test", "batch_size"):
        require_int("dci", params, key)
    require_choice("dci", params, "backend", BACKENDS)
    require_number("dci", params, "max_minutes", low=0.0, strict=True)
    if params["backend"] == "lightgbm" and importlib.util.find_spec("lightgbm") is None:
        raise ParameterError("dci.backend", "the lightgbm package is not installed "
                             "(pip install lightgbm), or choose dci.backend sklearn-gbt", value="lightgbm")

# Seconds per tree and per (tree x code column x training point) of each backend, measured
# on the 1,536-image test grid (2,400 trees) on the 2-core development machine, one thread
# (docs/metrics.md, "Checked before any work, and bounded"):
# time ~ trees x (PER_TREE + PER_CELL x columns x num_train).
SECONDS_PER_TREE = {"lightgbm": 4e-3, "sklearn-gbt": 1e-3}
SECONDS_PER_CELL = {"lightgbm": 4e-8, "sklearn-gbt": 7.6e-7}


def num_trees(factor_sizes) -> int:
    """Trees the boosting grows over all factors: per stage one per class (one for a
    binary factor, none for a constant one), times the stages."""
    return GBT_STAGES * sum(1 if s == 2 else s for s in factor_sizes if s >= 2)


def estimate_seconds(params: dict, summary: DataSummary) -> float | None:
    """DCI's time on one thread, from the code width, the factor sizes and num_train
    (None when the code width is not known yet)."""
    if summary.code_dim is None or summary.ground_truth is None:
        return None
    trees = num_trees(summary.factor_sizes)
    backend = params["backend"]
    return trees * (SECONDS_PER_TREE[backend]
                    + SECONDS_PER_CELL[backend] * summary.code_dim * int(params["num_train"]))


def check_data(params: dict, summary: DataSummary) -> None:
    """With the dataset in hand: a factor with two values in the training draw, and the
    estimated time within ``max_minutes`` (codes with thousands of columns take hours)."""
    require_factor_sample("dci", params, summary)
    seconds = estimate_seconds(params, summary)
    if seconds is not None and seconds > 60 * params["max_minutes"]:
        raise ParameterError(
            "dci.max_minutes", f"DCI on {summary.code_dim:,} code columns x {num_trees(summary.factor_sizes):,} "
            f"trees x {params['num_train']:,} training points is estimated at {seconds / 60:,.0f} minutes "
            f"(backend {params['backend']}, one thread); set dci.max_minutes above that to run it, or lower "
            f"dci.num_train", value=repr(params["max_minutes"]), mentions=("dci.max_minutes", "dci.num_train"))


# Hyper-parameters of the reference, sklearn.ensemble.GradientBoostingClassifier() with all
# defaults, which the fast backend mirrors: 100 stages, learning rate 0.1, depth-3 trees,
# one-sample leaves, no subsampling, no regularisation beyond those.
GBT_STAGES, GBT_LEARNING_RATE, GBT_DEPTH = 100, 0.1, 3


def _fit_sklearn_gbt(x_train, y_train, x_test, seed: int, advance=lambda trees: None):
    """The reference: GradientBoostingClassifier() and its impurity-based importances.
    ``advance(trees)`` is told each stage's trees (sklearn's ``monitor`` hook, which
    stops nothing when it returns False)."""
    from sklearn.ensemble import GradientBoostingClassifier
    model = GradientBoostingClassifier(random_state=seed)
    per_stage = 1 if np.unique(y_train).size == 2 else np.unique(y_train).size

    def monitor(*_):
        advance(per_stage)
        return False          # never stop early (a bar's update may return True)
    model.fit(x_train, y_train, monitor=monitor)
    return np.abs(model.feature_importances_), model.predict(x_train), model.predict(x_test)


def _fit_lightgbm(x_train, y_train, x_test, seed: int, advance=lambda trees: None):
    """The reference's gradient boosting, with LightGBM growing the trees.

    What makes the trees the reference's (not just "a GBT with the same settings"):
    - split search on the residuals with unit weights: LightGBM gets gradient p - y and
      hessian 1, so its split gain G_l^2/n_l + G_r^2/n_r - G^2/n is the decrease of the
      residuals' squared error, i.e. sklearn's friedman_mse improvement;
    - exact thresholds: one histogram bin per distinct value (max_bin >= rows,
      min_data_in_bin = 1), depth-3 trees, one-sample leaves, no regularisation;
    - sklearn's leaf values: the Newton step (K-1)/K * sum(y - p) / sum(p (1 - p))
      (binary: without the (K-1)/K), times the learning rate, computed here from each
      new tree's leaf membership; the raw scores start at the log class priors and are
      kept here (LightGBM's own leaf values are ignored);
    - importance = total split gain per feature, which with unit hessians is sklearn's
      impurity-based ``feature_importances_`` (normalised to sum 1).
    Remaining differences: floating-point order and tie-breaking between equal splits
    (how close the results come: docs/metrics.md, "Speed"; benchmarks/bench_dci.py).
    """
    try:
        import lightgbm
    except ImportError:
        raise ParameterError("dci.backend", "the lightgbm backend needs the lightgbm package (pip install "
                             "lightgbm), or choose dci.backend sklearn-gbt", value="lightgbm") from None
    classes, y = np.unique(y_train, return_inverse=True)
    num_classes = classes.size
    trees = 1 if num_classes == 2 else num_classes      # sklearn: one tree per stage if binary
    rows, test_rows = len(y), len(x_test)
    prior = np.bincount(y, minlength=num_classes) / rows
    if trees == 1:
        target = (y == 1).astype(np.float64)[:, None]
        init = np.array([np.log(prior[1] / prior[0])])
    else:
        target = np.eye(num_classes)[y]
        init = np.log(prior)
    score_train = np.tile(init, (rows, 1))
    score_test = np.tile(init, (test_rows, 1))
    if not np.any(np.ptp(x_train, axis=0) > 0):
        # no code column varies: no tree can split (LightGBM refuses a dataset without a
        # usable feature), so every stage's one leaf moves the prior scores by sum(y - p)
        # = 0 -- the reference's model is the prior: zero importances, the prior's class
        advance(trees * GBT_STAGES)
        return (np.zeros(x_train.shape[1]),) + _predicted_classes(classes, score_train, score_test)
    params = _lightgbm_params(rows, trees, seed)
    booster = lightgbm.Booster(params, lightgbm.Dataset(x_train, label=y, params=params))
    newton_factor = (num_classes - 1) / num_classes if trees > 1 else 1.0
    current = {}

    def residual_gradients(_preds, _data):
        # LightGBM's own running scores (_preds) hold its leaf values, not sklearn's
        current["p"] = p = _probabilities(score_train)
        grad = p - target
        grad = grad[:, 0] if trees == 1 else grad
        return grad, np.ones_like(grad)

    for stage in range(GBT_STAGES):
        finished = booster.update(fobj=residual_gradients)
        _add_newton_leaves(booster, stage, x_train, x_test, target, current["p"], newton_factor,
                           score_train, score_test)
        advance(trees)
        if finished:          # no tree could split any more: later stages would add nothing
            advance(trees * (GBT_STAGES - stage - 1))
            break
    gain = np.abs(np.asarray(booster.feature_importance(importance_type="gain"), dtype=np.float64))
    importance = gain / gain.sum() if gain.sum() > 0 else gain
    return (importance,) + _predicted_classes(classes, score_train, score_test)


def _predicted_classes(classes, score_train, score_test):
    """The classes raw scores predict: the sign of one column (binary), else the argmax."""
    if score_train.shape[1] == 1:
        return (classes[(score_train[:, 0] > 0).astype(np.int64)],
                classes[(score_test[:, 0] > 0).astype(np.int64)])
    return classes[np.argmax(score_train, axis=1)], classes[np.argmax(score_test, axis=1)]


def _lightgbm_params(rows: int, trees: int, seed: int) -> dict:
    """LightGBM settings that grow the reference's trees (see :func:`_fit_lightgbm`)."""
    params = {"objective": "none", "learning_rate": GBT_LEARNING_RATE, "max_depth": GBT_DEPTH,
              "num_leaves": 2 ** GBT_DEPTH, "min_data_in_leaf": 1, "min_sum_hessian_in_leaf": 0.0,
              "lambda_l1": 0.0, "lambda_l2": 0.0, "min_gain_to_split": 0.0,
              "max_bin": max(255, rows), "min_data_in_bin": 1, "feature_pre_filter": False,
              "bagging_fraction": 1.0, "feature_fraction": 1.0, "seed": seed,
              "deterministic": True, "force_row_wise": True, "num_threads": 1, "verbose": -1}
    if trees > 1:
        params["num_class"] = trees
    return params


def _add_newton_leaves(booster, stage: int, x_train, x_test, target, p, newton_factor: float,
                       score_train, score_test) -> None:
    """Stage ``stage``'s sklearn leaf values (the Newton step from each new tree's leaf
    membership, see :func:`_fit_lightgbm`), added times the learning rate to the raw
    scores in place."""
    trees = score_train.shape[1]
    leaf_train = booster.predict(x_train, start_iteration=stage, num_iteration=1,
                                 pred_leaf=True).reshape(len(score_train), trees)
    leaf_test = booster.predict(x_test, start_iteration=stage, num_iteration=1,
                                pred_leaf=True).reshape(len(score_test), trees)
    for t in range(trees):
        size = int(max(leaf_train[:, t].max(), leaf_test[:, t].max())) + 1
        numerator = np.bincount(leaf_train[:, t], weights=target[:, t] - p[:, t], minlength=size)
        denominator = np.bincount(leaf_train[:, t], weights=p[:, t] * (1 - p[:, t]), minlength=size)
        ok = np.abs(denominator) >= 1e-150            # sklearn's guard
        value = np.where(ok, newton_factor * numerator / np.where(ok, denominator, 1.0), 0.0)
        score_train[:, t] += GBT_LEARNING_RATE * value[leaf_train[:, t]]
        score_test[:, t] += GBT_LEARNING_RATE * value[leaf_test[:, t]]


def _probabilities(scores: np.ndarray) -> np.ndarray:
    """Class probabilities from raw scores: sigmoid (one column) or softmax."""
    if scores.shape[1] == 1:
        return 1.0 / (1.0 + np.exp(-scores))
    e = np.exp(scores - scores.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


_FITTERS = {"sklearn-gbt": _fit_sklearn_gbt, "lightgbm": _fit_lightgbm}


def _entropy(p: np.ndarray, base: int) -> np.ndarray:
    """Entropy (base ``base``) of each column of non-negative weights, normalised to sum 1
    per column (scipy.stats.entropy's convention)."""
    p = p / p.sum(axis=0, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.where(p > 0, np.log(p), 0.0)
    return -(p * logs).sum(axis=0) / np.log(base)


def disentanglement(importance: np.ndarray) -> float:
    """dlib's disentanglement of a (D, K) importance matrix: per code dimension, 1 - entropy
    (base K) of its importances over factors (1e-11 added), weighted by its share of the
    total importance (uniform if the matrix is all zero)."""
    dims, factors = importance.shape
    if factors < 2:
        return 1.0   # one factor: every dimension is trivially about that factor
    per_code = 1.0 - _entropy(importance.T + 1e-11, base=factors)
    weights = importance if importance.sum() > 0 else np.ones_like(importance)
    return float(np.sum(per_code * weights.sum(axis=1) / weights.sum()))


def completeness(importance: np.ndarray) -> float:
    """dlib's completeness: per factor, 1 - entropy (base D) of its importances over code
    dimensions (1e-11 added), weighted by the factor's share of the total importance."""
    dims, factors = importance.shape
    if dims < 2:
        return 1.0   # one code dimension captures every factor completely
    per_factor = 1.0 - _entropy(importance + 1e-11, base=dims)
    weights = importance if importance.sum() > 0 else np.ones_like(importance)
    return float(np.sum(per_factor * weights.sum(axis=0) / weights.sum()))


def dci_score(codes, ground_truth, rng: np.random.Generator, *, num_train: int = 10_000,
              num_test: int = 5_000, batch_size: int = 16,
              backend: str = "lightgbm", max_minutes: float = 30.0) -> dict[str, float]:
    """DCI: per factor, a gradient-boosted tree classifier predicts the factor's class from
    the raw codes; its feature importances form a (D, K) matrix, from which
    ``disentanglement`` (headline) and ``completeness`` follow (dlib's formulas);
    ``informativeness_train`` / ``informativeness_test`` are the mean classification
    accuracies (dlib's names say "error" but hold accuracy; so do these).

    ``codes``: (N, D) array-like in dataset index order, read only as ``codes[idx]``.
    ``num_train`` then ``num_test`` points are drawn uniformly (``batch_size`` is dlib's
    sampling granularity only).

    ``backend``:
    - ``"sklearn-gbt"``: the reference, ``sklearn.ensemble.GradientBoostingClassifier()``
      with all defaults and its impurity importances. Minutes per model on dSprites (one
      tree per class per stage: 40 for orientation).
    - ``"lightgbm"`` (default): the same boosting algorithm (sklearn's split criterion,
      exact thresholds, Newton leaf values, prior init, impurity importances) with
      LightGBM growing the trees; see :func:`_fit_lightgbm`. Faster, with scores close to
      the reference's but not bit-identical, so the backend is recorded (speed and
      agreement: docs/metrics.md, "Speed"; benchmarks/bench_dci.py measures both).

    Deviations from dlib: the classifiers get ``random_state`` drawn from ``rng`` (dlib
    leaves it unset, so its tie-breaking is not reproducible); a factor that takes a
    single value in the training sample (no classifier can be fitted: dlib crashes) is
    dropped and counted in ``num_factors_dropped``; D = 1 or K = 1 give 1.0 for the
    trivially perfect score instead of a 0/0 entropy base. Codes none of whose columns
    vary in the training sample give the reference's prior model (zero importances: D = C
    = 0 as dlib's formulas give them, accuracy of the most frequent class) with either
    backend (LightGBM itself refuses such data).

    ``max_minutes`` is a guard, not a protocol parameter: the registry refuses, before
    any work, codes whose :func:`estimate_seconds` exceeds it; the function itself only
    shows its progress (a bar per factor on a terminal, the sweep's progress lines).
    """
    from disentangle.progress import bar, report
    del max_minutes
    check_positive_ints(num_train=num_train, num_test=num_test)
    if backend not in _FITTERS:
        raise UserError(f"dci: unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
    dims = check_codes(codes, ground_truth)
    x_train, y_train = sample_points(codes, ground_truth, num_train, rng)
    x_test, y_test = sample_points(codes, ground_truth, num_test, rng)
    fit = _FITTERS[backend]
    columns, train_acc, test_acc = [], [], []
    sizes = [np.unique(y_train[:, k]).size for k in range(ground_truth.num_factors)]
    progress = bar(num_trees(sizes), "dci", "tree")
    for k in range(ground_truth.num_factors):
        seed = random_state_int(rng)
        if sizes[k] < 2:
            continue
        report(f"metric dci: factor {ground_truth.factor_names[k]}", k, ground_truth.num_factors, "factors")
        progress.set_description(f"dci {ground_truth.factor_names[k]}")
        importance, pred_train, pred_test = fit(x_train, y_train[:, k], x_test, seed, progress.update)
        columns.append(importance)
        train_acc.append(np.mean(pred_train == y_train[:, k]))
        test_acc.append(np.mean(pred_test == y_test[:, k]))
    progress.close()
    if not columns:
        raise UserError("dci: every factor took a single value in the sample; nothing to score")
    importance = np.stack(columns, axis=1).reshape(dims, len(columns))
    # max(0, .): the entropies can exceed their base by ~1e-16 in floating point
    return {"disentanglement": max(0.0, disentanglement(importance)),
            "completeness": max(0.0, completeness(importance)),
            "informativeness_train": float(np.mean(train_acc)),
            "informativeness_test": float(np.mean(test_acc)),
            "num_factors_scored": float(len(columns)),
            "num_factors_dropped": float(ground_truth.num_factors - len(columns))}
