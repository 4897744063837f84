"""The metric registry: CLI name -> :class:`MetricSpec`, every metric the toolkit
computes (the published disentanglement metrics, ``info``, and the study-level ``udr``).

Each entry declares everything the rest of the toolkit needs to know about its metric,
so evaluate, report, plots, sweep and the LaTeX writer hold no per-metric tables:

- ``fn`` and ``needs``: the function is called as ``fn(*inputs, rng, **params)`` with the
  inputs named in ``needs``, in that order, from this vocabulary (:data:`INPUTS`):
  ``codes`` (an (N, D) array-like of encoder means in dataset index order, read only as
  ``codes[idx]`` plus ``codes.shape``: the codes table, or a lazy object that encodes
  images on demand), ``ground_truth`` (the dataset's factors), ``codes_table`` (the run's
  whole table: ``.mean`` and ``.logvar``), ``model`` (the trained model) and ``dataset``
  (the DSpritesData). The published metrics need ``("codes", "ground_truth")``, so a
  user can score any representation laid out in index order. A study-level metric
  (``kind`` "study": UDR) compares the runs of one configuration: its inputs are
  ``group_means`` (each run's codes on the same images) and ``group_kls`` (each run's
  mean KL per dimension there), and it returns one values dict per run.
  :func:`run_level` and :func:`study_level` split the registry by that kind.
- ``defaults`` and ``check``: the protocol parameters (PROTOCOLS.md) and a function that
  checks a complete parameter dict, raising ParameterError naming ``metric.param``;
  :meth:`MetricSpec.params` runs it, so every value is checked before any work starts.
- ``check_data``: ``check_data(params, summary)`` with the dataset in hand (a
  :class:`~disentangle.evaluation.metrics.utils.DataSummary`: image count, factor grid,
  code width when known, seed), raising ParameterError naming ``metric.param`` or a
  UserError naming the dataset when the protocol's sizes cannot work on it (a factor with
  one value, too few points for two classes, a code too narrow or too wide);
  :meth:`MetricSpec.check_inputs` runs it (after the factor check every factor metric
  shares) before any image is encoded. ``estimate``: optional seconds the metric will
  take on that data, told to the user up front when long (DCI on wide codes).
- ``headline_keys``: the scores a table shows by default, the first standing for the
  metric in figures; ``labels`` (axis/legend text) and ``latex`` (table headers) per key.
- ``kind``: "disentanglement", "study" or "information"; :func:`display_order` lists the metrics
  by kind, then in registry order. ``summary``: optional console text of one run's values
  (``info`` prints its sandwich H(X) - D <= I_q <= R with its warnings).
- ``warnings``: ``warnings(values) -> list[str]``, what makes a score of this metric
  misleading as shown (a FactorVAE 0 because every dimension was pruned, factors dropped
  by MIG/SAP/DCI, a broken information sandwich); the evaluate table, the reports and the
  study report mark such scores (:data:`FLAG_MARK`, :func:`flag_footnote`). ``values`` may
  come from a results table, so a missing key is NaN or absent, never an error.
- ``optional``: inputs of ``needs`` the metric can do without (it is given None): the
  unsupervised scores use ``ground_truth`` only to draw images uniformly, and draw image
  indices uniformly on a dataset without factors. :attr:`MetricSpec.needs_factors` (a
  ``ground_truth`` it cannot do without) and :func:`applicable` say which metrics a
  dataset without ground-truth factors (CelebA, an image folder) can have.
- ``subsumed_by``: a metric whose values the named one already contains
  (``info_posterior`` is part of ``info``); ``--metric all`` leaves it out when the
  other one is selected.

Callers record ``spec.record_params(overrides)`` next to the values: the protocol
parameters actually used plus what the environment decides (e.g. the installed sklearn's
version and LogisticRegression solver), so readers can tell which numbers are comparable.

Adding a metric: its module (function, DEFAULTS, check_params) and one entry below.

Importing this module is cheap: sklearn, torch and friends are imported inside the metrics.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from disentangle.errors import ParameterError, UserError
from disentangle.evaluation import information
from disentangle.evaluation.metrics import beta_vae, dci, factor_vae, mig, sap
from disentangle.evaluation.metrics import (dci_es, infomec, irs, modularity_explicitness, udr,
                                            unsupervised)
from disentangle.evaluation.metrics.utils import DataSummary, require_varying_factor, sklearn_version

# What an entry's ``needs`` may name (see the module docstring).
INPUTS = ("codes", "ground_truth", "codes_table", "model", "dataset", "group_means", "group_kls")
# Display order of the kinds: disentanglement scores first, as papers list them.
KINDS = ("disentanglement", "study", "information")

# The mark on a score its metric's registry entry warns about (MetricSpec.warnings); the
# footnote under the table says why. LaTeX writes it as a math dagger.
FLAG_MARK = "†"


@dataclass(frozen=True)
class MetricSpec:
    """One registered metric (fields: see the module docstring).

    ``provenance``: returns environment-dependent settings worth recording with the
    params (called at evaluation time; may import sklearn).
    """

    name: str
    fn: Callable[..., dict]
    defaults: Mapping[str, Any]
    check: Callable[[dict], Any]
    headline_keys: tuple[str, ...]
    description: str
    labels: Mapping[str, str] = field(default_factory=dict)
    latex: Mapping[str, str] = field(default_factory=dict)
    needs: tuple[str, ...] = ("codes", "ground_truth")
    kind: str = "disentanglement"
    provenance: Callable[[dict], dict] = field(default=lambda params: {})
    # console text for a run's values beyond the table's headline cells (None: nothing)
    summary: Callable[[dict], str] | None = None
    # why a score is misleading as shown, one line each (see the module docstring)
    warnings: Callable[[Mapping[str, Any]], list[str]] = field(default=lambda values: [])
    subsumed_by: str | None = None
    optional: tuple[str, ...] = ()
    # with the dataset in hand, before any work (see the module docstring)
    check_data: Callable[[dict, DataSummary], Any] | None = None
    estimate: Callable[[dict, DataSummary], "float | None"] | None = None

    def __post_init__(self) -> None:
        unknown = [n for n in self.needs + self.optional if n not in INPUTS]
        if not set(self.optional) <= set(self.needs):
            raise ValueError(f"metric {self.name!r}: optional inputs {self.optional} not among needs {self.needs}")
        if unknown or self.kind not in KINDS or not self.headline_keys:
            raise ValueError(f"metric {self.name!r}: bad registry entry (needs {unknown}, kind {self.kind!r})")

    @property
    def needs_factors(self) -> bool:
        """Whether the metric scores against ground-truth factors (a dataset without them
        cannot have it)."""
        return "ground_truth" in self.needs and "ground_truth" not in self.optional

    @property
    def headline(self) -> str:
        """The one key that stands for the metric (figures, the first table column)."""
        return self.headline_keys[0]

    def params(self, overrides: Mapping[str, Any] | None = None) -> dict:
        """The protocol parameters with ``overrides`` applied and every value checked;
        unknown names or bad values -> UserError naming the metric."""
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - set(self.defaults))
        if unknown:
            raise ParameterError(f"{self.name}.{unknown[0]}", f"{self.name} has no parameter {unknown[0]!r}; "
                                 f"its parameters: {', '.join(self.defaults)}")
        params = {**self.defaults, **overrides}
        self.check(params)
        from disentangle.evaluation.metrics.utils import check_sample_bounds
        check_sample_bounds(self.name, params)
        return params

    def check_inputs(self, params: Mapping[str, Any], summary: DataSummary) -> None:
        """``params`` (complete, checked by :meth:`params`) against the data the metric
        will get: a factor metric needs a factor with two values, then the entry's own
        :attr:`check_data`. ParameterError / UserError before any work."""
        if self.needs_factors:
            require_varying_factor(self.name, summary)
        if self.check_data is not None:
            self.check_data(dict(params), summary)

    def record_params(self, overrides: Mapping[str, Any] | None = None) -> dict:
        """What to store as the score's "params": :meth:`params` plus :attr:`provenance`."""
        params = self.params(overrides)
        return {**params, **self.provenance(params)}

    def label(self, key: str) -> str:
        """Axis or legend text for the score ``key``; the column name when none is declared."""
        return self.labels.get(key, f"{self.name}.{key}")

    def __call__(self, *inputs_and_rng, **overrides) -> dict[str, float]:
        """``spec(*inputs, rng, **overrides)``: inputs as named in :attr:`needs`."""
        return self.fn(*inputs_and_rng, **self.params(overrides))


def _positive(values: Mapping[str, Any], key: str) -> float:
    """``values[key]`` as a float when it is a number above 0, else 0 (absent, NaN, None)."""
    try:
        x = float(values.get(key) or 0.0)
    except (TypeError, ValueError):
        return 0.0
    return x if x > 0 else 0.0


def _factors_dropped_warning(values: Mapping[str, Any]) -> list[str]:
    # MIG/SAP/DCI (and the others that report it) skip factors with one value or no
    # classifier fit; the score then averages over fewer factors than the dataset has
    n = _positive(values, "num_factors_dropped")
    return [f"{n:g} factor(s) dropped (constant in the sample or not fittable): "
            f"the score averages over fewer factors"] if n else []


def _factor_vae_warnings(values: Mapping[str, Any]) -> list[str]:
    if _positive(values, "all_dims_pruned"):
        return ["every code dimension was pruned (std below prune_threshold): the 0 means "
                "no dimension was scored, not a measured 0 (rescale the codes or lower "
                "factor_vae.prune_threshold)"]
    return []


def _sandwich_warnings(values: Mapping[str, Any]) -> list[str]:
    try:
        return information.sandwich_violations(dict(values))
    except (KeyError, TypeError, ValueError):  # a results table without the estimate's keys
        return []


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
        check=beta_vae.check_params, check_data=beta_vae.check_data, headline_keys=("eval_accuracy",),
        labels={"eval_accuracy": "β-VAE metric (eval accuracy)"},
        latex={"eval_accuracy": r"$\beta$-VAE score"},
        description="β-VAE metric (Higgins et al. 2017): logistic regression predicts the "
                    "fixed factor from mean |z1 - z2| over 64 pairs; chance 1/K",
        provenance=_logistic_regression_provenance),
    "factor_vae": MetricSpec(
        name="factor_vae", fn=factor_vae.factor_vae_score, defaults=dict(factor_vae.DEFAULTS),
        check=factor_vae.check_params, headline_keys=("eval_accuracy",),
        labels={"eval_accuracy": "FactorVAE score (eval accuracy)"},
        latex={"eval_accuracy": "FactorVAE score"},
        description="FactorVAE score (Kim & Mnih 2018): majority vote of the least-variable "
                    "normalised dimension per fixed factor; chance 1/K",
        provenance=lambda params: {"classifier": "majority vote"}, warnings=_factor_vae_warnings),
    "mig": MetricSpec(
        name="mig", fn=mig.mig_score, defaults=dict(mig.DEFAULTS), check=mig.check_params,
        check_data=mig.check_data,
        headline_keys=("discrete_mig",), labels={"discrete_mig": "MIG"}, latex={"discrete_mig": "MIG"},
        description="Mutual Information Gap (Chen et al. 2018) as disentanglement_lib computes "
                    "it: 20-bin histogram of the codes, plug-in MI, normalised by H(factor)",
        provenance=lambda params: {"discretizer": "histogram", "mi_estimator": "plug-in (nats)"},
        warnings=_factors_dropped_warning),
    "dci": MetricSpec(
        name="dci", fn=dci.dci_score, defaults=dict(dci.DEFAULTS), check=dci.check_params,
        check_data=dci.check_data, estimate=dci.estimate_seconds,
        headline_keys=("disentanglement", "completeness", "informativeness_test"),
        labels={"disentanglement": "DCI disentanglement", "completeness": "DCI completeness",
                "informativeness_test": "DCI informativeness (test)"},
        latex={"disentanglement": "DCI D", "completeness": "DCI C", "informativeness_test": "DCI I"},
        description="DCI (Eastwood & Williams 2018): gradient-boosted-tree importances -> "
                    "disentanglement, completeness; informativeness = accuracy",
        provenance=_dci_provenance, warnings=_factors_dropped_warning),
    "sap": MetricSpec(
        name="sap", fn=sap.sap_score, defaults=dict(sap.DEFAULTS), check=sap.check_params,
        check_data=sap.check_data,
        headline_keys=("sap_score",), labels={"sap_score": "SAP score"}, latex={"sap_score": "SAP"},
        description="SAP score (Kumar et al. 2018): gap between the two code dimensions that "
                    "best predict each factor alone (LinearSVC accuracy)",
        provenance=lambda params: {
            "classifier": ("squared correlation" if params["continuous_factors"] else
                           "sklearn.svm.LinearSVC(C=0.01, class_weight='balanced')"),
            "sklearn_version": sklearn_version()},
        warnings=_factors_dropped_warning),
    # the rest of what papers report (issue 13); the study-level udr follows the dict
    "modularity_explicitness": MetricSpec(
        name="modularity_explicitness", fn=modularity_explicitness.modularity_explicitness,
        defaults=dict(modularity_explicitness.DEFAULTS), check=modularity_explicitness.check_params,
        check_data=modularity_explicitness.check_data,
        headline_keys=modularity_explicitness.HEADLINE, labels=modularity_explicitness.LABELS,
        latex={"modularity_score": "Modularity", "explicitness_score_test": "Explicitness"},
        description="Modularity & explicitness (Ridgeway & Mozer 2018) as dlib: 20-bin MI "
                    "matrix -> modularity; one-vs-rest ROC-AUC of a logistic regression",
        provenance=_logistic_regression_provenance),
    "unsupervised": MetricSpec(
        name="unsupervised", fn=unsupervised.unsupervised_scores, defaults=dict(unsupervised.DEFAULTS),
        check=unsupervised.check_params, check_data=unsupervised.check_data,
        headline_keys=unsupervised.HEADLINE, labels=unsupervised.LABELS,
        optional=("ground_truth",),
        latex={"gaussian_total_correlation": "Gaussian TC", "mutual_info_score": "mean MI"},
        description="dlib's unsupervised scores: Gaussian total / Wasserstein correlation of "
                    "the codes' covariance, mean pairwise MI of the 20-bin codes (no factors)"),
    "irs": MetricSpec(
        name="irs", fn=irs.irs_score, defaults=dict(irs.DEFAULTS), check=irs.check_params,
        headline_keys=irs.HEADLINE, labels=irs.LABELS, latex={"IRS": "IRS"},
        description="Interventional robustness score (Suter et al. 2019) as dlib: 0.99 quantile "
                    "of code deviation at fixed factor vs the dimension's max deviation"),
    "dci_es": MetricSpec(
        name="dci_es", fn=dci_es.dci_es_score, defaults=dict(dci_es.DEFAULTS), check=dci_es.check_params,
        check_data=dci_es.check_data,
        headline_keys=dci_es.HEADLINE, labels=dci_es.LABELS,
        latex={"explicitness": "DCI-ES E", "size": "DCI-ES S"},
        description="DCI-ES (Eastwood et al. 2023): explicitness = 1 - area under the "
                    "loss-capacity curve of random-forest probes (depth 1..32; ordered factors "
                    "regressed, categorical classified, as the authors' code); size = K / D",
        provenance=lambda params: {"probe": (
            f"sklearn.ensemble.RandomForestClassifier(n_estimators={params['num_trees']}) for every factor"
            if params["targets"] == "classification" else
            f"sklearn.ensemble.RandomForestClassifier(n_estimators={params['num_trees']}) for categorical "
            f"factors, RandomForestRegressor(n_estimators={params['num_trees']}) for ordered ones")
            + ", capacity = max_depth", "sklearn_version": sklearn_version()}),
    "infomec": MetricSpec(
        name="infomec", fn=infomec.infomec_score, defaults=dict(infomec.DEFAULTS), check=infomec.check_params,
        check_data=infomec.check_data,
        headline_keys=infomec.HEADLINE, labels=infomec.LABELS,
        latex={"infom": "InfoM", "infoc": "InfoC", "infoe": "InfoE"},
        description="InfoMEC (Hsu et al. 2023): InfoM / InfoC from kNN-normalised MI after "
                    "pruning latents, InfoE = linear (logistic) predictive information",
        provenance=lambda params: {"mi_estimator": "sklearn mutual_info_classif (kNN)",
                                   "sklearn_version": sklearn_version()}),
    # information-theoretic estimates: every image's posterior (the whole codes table),
    # the decoder (distortion) and the images themselves (H(X))
    "info": MetricSpec(
        name="info", fn=information.information_scores, defaults=dict(information.DEFAULT_PARAMS),
        check=information.check_params, needs=("model", "codes_table", "dataset"), kind="information",
        summary=information.format_summary,
        headline_keys=("rate_nats", "distortion_nats", "entropy_x_nats", "i_gen_lower_nats", "i_q_nats"),
        labels={"rate_nats": "rate R (nats)", "distortion_nats": "distortion D (nats)",
                "i_q_nats": "I_q(X;Z) (nats)", "i_gen_lower_nats": "I_gen lower bound H(X) − D (nats)",
                "total_correlation_nats": "total correlation (nats)", "active_dims": "active dimensions"},
        # nats: the caption says so once
        latex={"rate_nats": r"$R$", "distortion_nats": r"$D$", "entropy_x_nats": r"$H(X)$",
               "i_gen_lower_nats": r"$H(X) - D$", "i_q_nats": r"$I_q(X;Z)$"},
        description="rate, distortion, exact H(X), the bounds on I(X;Z), I_q, total "
                    "correlation and per-dimension KL (nats, with *_bits)",
        warnings=_sandwich_warnings),
    # the part of info that needs only every image's posterior (mean and logvar): what a
    # codes table made anywhere can give (`disentangle score`, docs/score.md)
    "info_posterior": MetricSpec(
        name="info_posterior", fn=information.posterior_scores,
        defaults=dict(information.POSTERIOR_DEFAULT_PARAMS), check=information.check_posterior_params,
        needs=("codes_table",), kind="information", subsumed_by="info",
        headline_keys=("rate_nats", "i_q_nats", "total_correlation_nats"),
        labels={"rate_nats": "rate R (nats)", "i_q_nats": "I_q(X;Z) (nats)",
                "total_correlation_nats": "total correlation (nats)", "active_dims": "active dimensions"},
        latex={"rate_nats": r"$R$", "i_q_nats": r"$I_q(X;Z)$", "total_correlation_nats": r"$\mathrm{TC}$"},
        description="info's posterior-only part: rate, I_q with its standard error, total "
                    "correlation, dimension-wise and per-dimension KL (no decoder: no D, H(X))",
        warnings=_sandwich_warnings),
}


def _udr(group_means, group_kls, rng, *, num_data_points, batch_size, kl_filter_threshold, lasso_alpha):
    # num_data_points: the images the caller drew, shared by the group's models; batch_size:
    # dlib's encoding batch, recorded (the codes table makes it irrelevant to the values)
    return udr.udr_scores(group_means, group_kls, rng, kl_filter_threshold=kl_filter_threshold,
                          lasso_alpha=lasso_alpha)


METRICS["udr"] = MetricSpec(
    name="udr", fn=_udr, defaults=dict(udr.DEFAULTS), check=udr.check_params,
    needs=("group_means", "group_kls"), kind="study",
    # every scalar it returns, as tables showed it before it was registered
    headline_keys=udr.HEADLINE + ("num_active_dims",), labels=udr.LABELS,
    description="Unsupervised Disentanglement Ranking (Duan et al. 2020) as dlib: median "
                "pairwise Lasso / Spearman similarity of a run's active dimensions with the "
                "other seeds of its configuration (`disentangle evaluate-study`)",
    provenance=lambda params: {"correlation": "lasso (sklearn Lasso) and spearman"})


def run_level() -> list[str]:
    """The metrics of one run (``evaluate``, ``score``, a sweep's ``--metric``)."""
    return [m for m, spec in METRICS.items() if spec.kind != "study"]


def applicable(has_factors: bool, names=None) -> list[str]:
    """The run-level metrics (or those of ``names``) a dataset with or without
    ground-truth factors can have: without them, those that need no factors."""
    names = run_level() if names is None else list(names)
    return [m for m in names if has_factors or not METRICS[m].needs_factors]


def study_level() -> list[str]:
    """The metrics that compare the runs of a study (``evaluate-study``)."""
    return [m for m, spec in METRICS.items() if spec.kind == "study"]


def flag_footnote(flags, mark: str = FLAG_MARK, most_runs: int = 4) -> list[str]:
    """The footnote lines under a table with flagged scores: one per metric and warning,
    naming the runs (``flags``: {(run, metric): [warning, ...]}); [] when nothing is flagged."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for (run, metric), found in flags.items():
        for message in found:
            grouped.setdefault((metric, message), []).append(run)
    lines = []
    for (metric, message), runs in grouped.items():
        shown = ", ".join(runs[:most_runs]) + (f" and {len(runs) - most_runs} more" if len(runs) > most_runs else "")
        lines.append(f"{mark} {metric} ({shown}): {message}")
    return lines


def get_metric(name: str) -> MetricSpec:
    """The registered metric called ``name``; UserError listing the known names otherwise."""
    try:
        return METRICS[name]
    except KeyError:
        raise UserError(f"unknown metric {name!r}; known: {', '.join(METRICS)}") from None


def display_order(names=None) -> list[str]:
    """Registered metric names (or the given ones) in display order: by kind, then in
    registry order; names not registered go after the disentanglement metrics, sorted."""
    names = list(METRICS) if names is None else list(dict.fromkeys(names))
    registered = list(METRICS)

    def rank(name):
        spec = METRICS.get(name)
        if spec is None:
            return (KINDS.index("disentanglement"), len(registered), name)
        return (KINDS.index(spec.kind), registered.index(name), name)
    return sorted(names, key=rank)


def metrics_of_kind(kind: str) -> list[str]:
    return [m for m in display_order() if METRICS[m].kind == kind]


def score_metrics() -> list[str]:
    """The disentanglement scores tables and figures show, run-level and study-level
    (UDR) alike, in display order (everything but the information view)."""
    return [m for m in display_order() if METRICS[m].kind != "information"]


__all__ = ["DataSummary", "FLAG_MARK", "INPUTS", "KINDS", "METRICS", "MetricSpec", "applicable", "display_order", "flag_footnote", "get_metric",
           "metrics_of_kind", "score_metrics", "run_level", "study_level"]
