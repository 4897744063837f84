"""The metric registry: CLI name -> :class:`MetricSpec`.

Every metric is a plain function ``fn(codes, ground_truth, rng, **params) -> dict[str,
float]`` with disentanglement_lib's protocol parameters as defaults (PROTOCOLS.md).
``codes`` is an (N, D) array-like in dataset index order that the metric reads only as
``codes[idx]`` (1-D int64 index) plus ``codes.shape``; so a user can score any
representation laid out in index order, and the protocol-encode path can pass a lazy
object that encodes images on demand.

Callers record ``spec.record_params(overrides)`` next to the values: the protocol
parameters actually used plus what the environment decides (e.g. the installed sklearn's
version and LogisticRegression solver), so readers can tell which numbers are comparable.

Importing this module is cheap: sklearn and friends are imported inside the metrics.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from disentangle.errors import UserError
from disentangle.evaluation.metrics import beta_vae, dci, factor_vae, mig, sap
from disentangle.evaluation.metrics import (dci_es, infomec, irs, modularity_explicitness,
                                            unsupervised)
from disentangle.evaluation.metrics.utils import sklearn_version


@dataclass(frozen=True)
class MetricSpec:
    """One registered metric.

    ``defaults``: the protocol parameters (the function's keyword defaults).
    ``headline``: the key of the score that tables report by default.
    ``provenance``: returns environment-dependent settings worth recording with the
    params (called at evaluation time; may import sklearn).
    """

    name: str
    fn: Callable[..., dict]
    defaults: Mapping[str, Any]
    headline: str
    description: str
    provenance: Callable[[dict], dict] = field(default=lambda params: {})

    def params(self, overrides: Mapping[str, Any] | None = None) -> dict:
        """The protocol parameters with ``overrides`` applied; unknown names -> UserError."""
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - set(self.defaults))
        if unknown:
            raise UserError(f"metric {self.name!r} has no parameter(s) {unknown}; "
                            f"known: {sorted(self.defaults)}")
        return {**self.defaults, **overrides}

    def record_params(self, overrides: Mapping[str, Any] | None = None) -> dict:
        """What to store as the score's "params": :meth:`params` plus :attr:`provenance`."""
        params = self.params(overrides)
        return {**params, **self.provenance(params)}

    def __call__(self, codes, ground_truth, rng, **overrides) -> dict[str, float]:
        return self.fn(codes, ground_truth, rng, **self.params(overrides))


def _logistic_regression_provenance(params: dict) -> dict:
    from sklearn.linear_model import LogisticRegression
    model = LogisticRegression()
    return {"classifier": "sklearn.linear_model.LogisticRegression (installed defaults)",
            "solver": str(model.solver), "C": float(model.C), "max_iter": int(model.max_iter),
            "sklearn_version": sklearn_version()}


def _dci_provenance(params: dict) -> dict:
    from importlib.metadata import PackageNotFoundError, version
    if params.get("backend") == "lightgbm":
        try:
            lib = {"lightgbm_version": version("lightgbm")}
        except PackageNotFoundError:
            lib = {"lightgbm_version": "not installed"}
        return {"classifier": "GradientBoostingClassifier() algorithm (100 stages, lr 0.1, "
                              "depth 3, friedman_mse splits, exact thresholds, Newton leaves) "
                              "with LightGBM growing the trees; importance = impurity decrease",
                **lib}
    return {"classifier": "sklearn.ensemble.GradientBoostingClassifier (installed defaults); "
                          "importance = feature_importances_",
            "sklearn_version": sklearn_version()}


METRICS: dict[str, MetricSpec] = {
    "beta_vae": MetricSpec(
        name="beta_vae", fn=beta_vae.beta_vae_score, defaults=dict(beta_vae.DEFAULTS),
        headline="eval_accuracy",
        description="β-VAE metric (Higgins et al. 2017): logistic regression predicts the "
                    "fixed factor from mean |z1 - z2| over 64 pairs; chance 1/K",
        provenance=_logistic_regression_provenance),
    "factor_vae": MetricSpec(
        name="factor_vae", fn=factor_vae.factor_vae_score, defaults=dict(factor_vae.DEFAULTS),
        headline="eval_accuracy",
        description="FactorVAE score (Kim & Mnih 2018): majority vote of the least-variable "
                    "normalised dimension per fixed factor; chance 1/K",
        provenance=lambda params: {"classifier": "majority vote"}),
    "mig": MetricSpec(
        name="mig", fn=mig.mig_score, defaults=dict(mig.DEFAULTS), headline="discrete_mig",
        description="Mutual Information Gap (Chen et al. 2018) as disentanglement_lib computes "
                    "it: 20-bin histogram of the codes, plug-in MI, normalised by H(factor)",
        provenance=lambda params: {"discretizer": "histogram", "mi_estimator": "plug-in (nats)"}),
    "dci": MetricSpec(
        name="dci", fn=dci.dci_score, defaults=dict(dci.DEFAULTS), headline="disentanglement",
        description="DCI (Eastwood & Williams 2018): gradient-boosted-tree importances -> "
                    "disentanglement, completeness; informativeness = accuracy",
        provenance=_dci_provenance),
    "sap": MetricSpec(
        name="sap", fn=sap.sap_score, defaults=dict(sap.DEFAULTS), headline="sap_score",
        description="SAP score (Kumar et al. 2018): gap between the two code dimensions that "
                    "best predict each factor alone (LinearSVC accuracy)",
        provenance=lambda params: {
            "classifier": ("squared correlation" if params["continuous_factors"] else
                           "sklearn.svm.LinearSVC(C=0.01, class_weight='balanced')"),
            "sklearn_version": sklearn_version()}),
    # issue 13: each module also holds HEADLINE, LABELS, NEEDS and check_params for the
    # new registry; udr is study-level (disentangle evaluate-study), not listed here
    "modularity_explicitness": MetricSpec(
        name="modularity_explicitness", fn=modularity_explicitness.modularity_explicitness,
        defaults=dict(modularity_explicitness.DEFAULTS), headline="modularity_score",
        description="Modularity & explicitness (Ridgeway & Mozer 2018) as dlib: 20-bin MI "
                    "matrix -> modularity; one-vs-rest ROC-AUC of a logistic regression",
        provenance=_logistic_regression_provenance),
    "unsupervised": MetricSpec(
        name="unsupervised", fn=unsupervised.unsupervised_scores, defaults=dict(unsupervised.DEFAULTS),
        headline="gaussian_total_correlation",
        description="dlib's unsupervised scores: Gaussian total / Wasserstein correlation of "
                    "the codes' covariance, mean pairwise MI of the 20-bin codes (no factors)"),
    "irs": MetricSpec(
        name="irs", fn=irs.irs_score, defaults=dict(irs.DEFAULTS), headline="IRS",
        description="Interventional robustness score (Suter et al. 2019) as dlib: 0.99 quantile "
                    "of code deviation at fixed factor vs the dimension's max deviation"),
    "dci_es": MetricSpec(
        name="dci_es", fn=dci_es.dci_es_score, defaults=dict(dci_es.DEFAULTS), headline="explicitness",
        description="DCI-ES (Eastwood et al. 2023): explicitness = 1 - area under the "
                    "loss-capacity curve of random-forest probes (depth 1..32); size = K / D",
        provenance=lambda params: {"probe": "sklearn.ensemble.RandomForestClassifier(n_estimators="
                                            f"{params['num_trees']}), capacity = max_depth",
                                   "sklearn_version": sklearn_version()}),
    "infomec": MetricSpec(
        name="infomec", fn=infomec.infomec_score, defaults=dict(infomec.DEFAULTS), headline="infom",
        description="InfoMEC (Hsu et al. 2023): InfoM / InfoC from kNN-normalised MI after "
                    "pruning latents, InfoE = linear (logistic) predictive information",
        provenance=lambda params: {"mi_estimator": "sklearn mutual_info_classif (kNN)",
                                   "sklearn_version": sklearn_version()}),
}


def get_metric(name: str) -> MetricSpec:
    """The registered metric called ``name``; UserError listing the known names otherwise."""
    try:
        return METRICS[name]
    except KeyError:
        raise UserError(f"unknown metric {name!r}; known: {', '.join(METRICS)}") from None


__all__ = ["METRICS", "MetricSpec", "get_metric"]
