"""DCI-ES explicitness and size (Eastwood et al. 2023, "DCI-ES: An Extended
Disentanglement Framework with Connections to Identifiability"), following the authors'
reference implementation andreinicolicioiu/DCI-ES (metrics/explitcitness.py,
src/loss_capacity/train_model_random_forest.py, configs/random_forest/*.yaml,
src/simple_gather.py, InDomainGeneralizationBenchmark/.../load_dataset.py for which factors
are categorical). D, C and I are the ``dci`` metric's.

Probe targets (``targets``): "mixed", the default and the reference's: a categorical
factor (dSprites' shape) is a classification target (loss 1 − accuracy, baseline loss
1 − 1/n_k), an ordered one (scale, orientation, position) a regression target on its class
index (``RandomForestRegressor``, loss 1 − R², baseline loss 1: predicting the mean);
"classification" makes every factor a classification target (the toolkit's DCI-ES before
issue 23; it lowers E by 0.26–0.57 on informative codes, so its numbers do not stand
beside the paper's). docs/metrics_extra.md has both on the synthetic codes."""
from __future__ import annotations

import numpy as np

from disentangle.errors import ParameterError, UserError
from disentangle.evaluation.metrics.utils import check_codes, random_state_int, sample_points

NAME = "dci_es"
# the reference's random-forest probe family: 100 trees, capacity = max_depth over these
DEPTHS = (1, 2, 3, 4, 8, 10, 12, 14, 16, 18, 20, 32)
TARGETS = ("mixed", "classification")
# The factors the reference treats as categorical (its ``_factor_discrete``), by the
# toolkit's factor names: dSprites' shape; Shapes3D's hues and shape; MPI3D's colours and
# shape; Cars3D's object. Every other factor is ordered. A ground truth that declares
# ``categorical_factors`` itself is followed instead.
REFERENCE_CATEGORICAL = ("shape", "floor_hue", "wall_hue", "object_hue", "color", "bg_color", "object",
                         "object_color", "object_shape", "background_color")
DEFAULTS = {"num_train": 10_000, "num_test": 5_000, "batch_size": 16, "num_trees": 100,
            "depths": DEPTHS, "targets": "mixed"}
HEADLINE = ("explicitness", "size")
LABELS = {"explicitness": "Explicitness (DCI-ES)", "size": "Size (DCI-ES)",
          "informativeness_test": "Informativeness (RF probe)"}
NEEDS = "factors"


def check_params(params) -> None:
    """ParameterError naming ``dci_es.<param>`` for a bad value."""
    for key in ("num_train", "num_test", "num_trees"):
        value = params.get(key, DEFAULTS[key])
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ParameterError(f"{NAME}.{key}", "must be a positive integer", value=repr(value))
    depths = params.get("depths", DEFAULTS["depths"])
    try:
        ok = (len(depths) >= 2 and all(not isinstance(d, bool) and int(d) == d and d >= 1 for d in depths)
              and list(depths) == sorted(set(depths)))
    except TypeError:
        ok = False
    if not ok:
        raise ParameterError(f"{NAME}.depths", "must be at least two increasing positive integers", value=repr(depths))
    targets = params.get("targets", DEFAULTS["targets"])
    if targets not in TARGETS:
        raise ParameterError(f"{NAME}.targets", f"must be one of {', '.join(TARGETS)}", value=repr(targets))


def check_data(params: dict, summary) -> None:
    """With the dataset in hand: a factor with two values in the training draw."""
    from disentangle.evaluation.metrics.utils import require_factor_sample
    require_factor_sample(NAME, params, summary)


def categorical_factors(ground_truth) -> tuple[str, ...]:
    """The factors "mixed" classifies: the ground truth's own ``categorical_factors`` when
    it declares them, else those of :data:`REFERENCE_CATEGORICAL` it has."""
    declared = getattr(ground_truth, "categorical_factors", None)
    if declared is not None:
        return tuple(declared)
    return tuple(n for n in ground_truth.factor_names if n in REFERENCE_CATEGORICAL)


def explicitness(capacities, losses, baseline_loss: float) -> float:
    """E = 1 − AULCC / Z for one factor's loss–capacity curve.

    As the reference: the loss at each capacity is the minimum reached up to it; the area
    is the trapezoid rule over the capacities (the random-forest depths, not their log).
    Z = (c_max − c_min) × baseline loss, with the paper's l* = 0 ("we assume l* = 0" in
    the reference's comment). Deviation: the reference's compute_explitcitness also
    subtracts the curve's own minimum loss and doubles the area; a code that carries
    nothing has a flat curve at the baseline loss and would get E = 1 there. Here such a
    code gets E ≈ 0 and a code that is predicted perfectly at the smallest capacity E = 1.
    """
    x = np.asarray(capacities, dtype=np.float64)
    y = np.minimum.accumulate(np.asarray(losses, dtype=np.float64))
    area = float(np.sum(0.5 * (y[1:] + y[:-1]) * np.diff(x)))
    return float(1.0 - area / ((x[-1] - x[0]) * baseline_loss))


def _truncated_prediction(forest, x: np.ndarray, depth: int) -> np.ndarray:
    """A regression forest's prediction with every tree cut at ``depth`` (a node at that
    depth predicts its training mean), as :func:`_truncated_proba` for classifiers."""
    out = np.zeros(x.shape[0])
    for tree in forest.estimators_:
        path = tree.decision_path(x)
        length = np.diff(path.indptr)
        nodes = path.indices[path.indptr[:-1] + np.minimum(depth, length - 1)]
        out += tree.tree_.value[nodes, 0, 0]
    return out / len(forest.estimators_)


def _truncated_proba(forest, x: np.ndarray, depth: int, classes: int) -> np.ndarray:
    """The forest's class probabilities with every tree cut at ``depth`` (a node at that
    depth predicts its training class distribution), i.e. what the same forest grown with
    ``max_depth=depth`` predicts: growth is greedy and depth-first, so the tree grown to
    depth d is the full tree's top d levels (same bootstrap; each node's random feature
    subset is an independent draw either way, so the forests have the same distribution,
    not the same random draws)."""
    proba = np.zeros((x.shape[0], classes))
    for tree in forest.estimators_:
        path = tree.decision_path(x)                  # CSR, per row the path's node ids, root first
        length = np.diff(path.indptr)
        nodes = path.indices[path.indptr[:-1] + np.minimum(depth, length - 1)]
        value = tree.tree_.value[nodes, 0, :]
        proba += value / value.sum(axis=1, keepdims=True)
    return proba / len(forest.estimators_)


def dci_es_score(codes, ground_truth, rng: np.random.Generator, *, num_train: int = 10_000,
                 num_test: int = 5_000, batch_size: int = 16, num_trees: int = 100,
                 depths=DEPTHS, targets: str = "mixed") -> dict[str, float]:
    """Explicitness: per factor, probes of growing capacity predict the factor from the
    codes; E_k = :func:`explicitness` of their test-loss curve; ``explicitness`` = mean
    over factors (headline). Probes: the reference's random-forest family with 100 trees,
    capacity = ``max_depth`` d over ``depths`` (the reference's
    configs/random_forest/config.yaml). With ``targets="mixed"`` (default, the reference's
    train_model_random_forest.py) a categorical factor (:func:`categorical_factors`) is
    predicted by ``RandomForestClassifier``, loss = 1 − test accuracy, baseline loss =
    1 − 1/n_k (the reference's dSprites value 2/3 for shape), and an ordered factor by
    ``RandomForestRegressor`` on its class index, loss = 1 − test R², baseline loss 1
    (simple_gather.py's baseline_loss); ``targets="classification"`` classifies every
    factor. One forest per factor is grown to the largest depth and cut at each smaller
    one (:func:`_truncated_proba`, :func:`_truncated_prediction`), so the curve costs one
    forest per factor.

    Size: ``size`` = K / D, the number of factors over the number of code dimensions (1
    for a code with one dimension per factor, smaller for a larger code), as the paper
    defines it (its section on size; the reference code has no function for it).

    Also ``explicitness_<factor>`` and ``informativeness_test`` (mean test accuracy of the
    best probe per factor, the reference's I).

    Also ``num_factors_regressed``. Deviations from the reference: points are sampled like DCI's (``num_train`` /
    ``num_test``) instead of the reference's whole-dataset splits; the forests get
    ``random_state`` from ``rng``; see :func:`explicitness` for the area's normalisation.
    A factor with one value in the training sample is dropped and counted.
    """
    del batch_size
    check_params({"num_train": num_train, "num_test": num_test, "num_trees": num_trees,
                  "depths": depths, "targets": targets})
    dims = check_codes(codes, ground_truth)
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    categorical = set(categorical_factors(ground_truth)) if targets == "mixed" else set(ground_truth.factor_names)
    depths = [int(d) for d in depths]
    x_train, y_train = sample_points(codes, ground_truth, num_train, rng)
    x_test, y_test = sample_points(codes, ground_truth, num_test, rng)
    result: dict[str, float] = {}
    per_factor, best_acc, regressed = [], [], 0
    for k, name in enumerate(ground_truth.factor_names):
        seed = random_state_int(rng)
        if np.unique(y_train[:, k]).size < 2:
            continue
        losses = []
        if name in categorical:
            forest = RandomForestClassifier(n_estimators=int(num_trees), max_depth=depths[-1],
                                            random_state=seed, n_jobs=1).fit(x_train, y_train[:, k])
            for depth in depths:
                proba = _truncated_proba(forest, x_test, depth, forest.classes_.size)
                losses.append(1.0 - np.mean(forest.classes_[np.argmax(proba, axis=1)] == y_test[:, k]))
            baseline = 1.0 - 1.0 / ground_truth.factor_sizes[k]
        else:
            y_fit, y_true = y_train[:, k].astype(np.float64), y_test[:, k].astype(np.float64)
            forest = RandomForestRegressor(n_estimators=int(num_trees), max_depth=depths[-1],
                                           random_state=seed, n_jobs=1).fit(x_train, y_fit)
            total = float(np.sum((y_true - y_true.mean()) ** 2))
            for depth in depths:
                residual = float(np.sum((y_true - _truncated_prediction(forest, x_test, depth)) ** 2))
                # 1 − R² (sklearn's r2_score); a test sample with one value: 0 when predicted exactly
                losses.append(residual / total if total > 0 else float(residual > 0))
            baseline = 1.0
            regressed += 1
        e = explicitness(depths, losses, baseline)
        result[f"explicitness_{name}"] = float(e)
        per_factor.append(e)
        best_acc.append(1.0 - float(min(losses)))
    if not per_factor:
        raise UserError(f"{NAME}: every factor took a single value in the sample; nothing to score")
    result["explicitness"] = float(np.mean(per_factor))
    result["size"] = float(ground_truth.num_factors / dims)
    # the best probe's score per factor: accuracy (classified) or R² (regressed), as the reference's I
    result["informativeness_test"] = float(np.mean(best_acc))
    result["num_factors_regressed"] = float(regressed)
    result["num_factors_dropped"] = float(ground_truth.num_factors - len(per_factor))
    return result
