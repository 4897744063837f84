"""The table of docs/metrics_extra.md: every metric of issue 13 on the synthetic codes of
tests/test_metrics_extra.py (full dSprites grid, 737,280 x 10, dataset index order).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/metrics_extra_table.py [--full]

Default sample sizes are reduced (printed in the header) so the table builds in a few
minutes on a loaded laptop; --full uses every metric's protocol defaults. UDR, a
study-level score, compares three "seeds" of each code: the code itself, a copy with its
dimensions permuted, flipped and rescaled, and a copy with 1% noise added; dimensions
that are constant get logvar 0 (KL 0, filtered), the others logvar -4.
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import numpy as np  # noqa: E402

from disentangle.data.ground_truth import GroundTruth  # noqa: E402
from disentangle.evaluation.metrics import METRICS, udr  # noqa: E402

COLUMNS = [("modularity_explicitness", "modularity_score"),
           ("modularity_explicitness", "explicitness_score_test"),
           ("unsupervised", "gaussian_total_correlation"), ("unsupervised", "mutual_info_score"),
           ("irs", "IRS"), ("dci_es", "explicitness"), ("dci_es", "size"),
           ("infomec", "infom"), ("infomec", "infoc"), ("infomec", "infoe")]
REDUCED = {"modularity_explicitness": dict(num_train=5000, num_test=2500),
           "unsupervised": {}, "irs": {},
           "dci_es": dict(num_train=5000, num_test=2500, num_trees=30),
           "infomec": dict(num_train=5000)}


def synthetic_codes(gt):
    """The ``codes`` fixture of tests/test_metrics_extra.py."""
    from test_metrics_extra import synthetic_codes as make
    return make(gt)


def udr_of(code, gt, rng):
    idx = gt.index_of(gt.sample_classes(udr.DEFAULTS["num_data_points"], rng))
    base = code[idx].astype(np.float64)
    logvar = np.where(base.std(axis=0) > 0, -4.0, 0.0) * np.ones_like(base)
    perm = rng.permutation(base.shape[1])
    signs = rng.choice([-3.0, -1.0, 0.5, 2.0], size=base.shape[1])
    means = [base, base[:, perm] * signs, base + 0.01 * rng.standard_normal(base.shape) * (base.std(axis=0) > 0)]
    kls = [udr.mean_kl_per_dim(base, logvar), udr.mean_kl_per_dim(base[:, perm] * signs, logvar[:, perm]),
           udr.mean_kl_per_dim(base, logvar)]
    return udr.udr_scores(means, kls, rng)[0]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--full", action="store_true", help="protocol defaults for every metric")
    parser.add_argument("--dci-es-targets", action="store_true",
                        help="only DCI-ES, its default (mixed) probes against dci_es.targets=classification")
    args = parser.parse_args()
    gt = GroundTruth.dsprites()
    codes = synthetic_codes(gt)
    if args.dci_es_targets:
        return dci_es_targets_table(gt, codes, {} if args.full else REDUCED["dci_es"])
    sizes = {m: ({} if args.full else REDUCED[m]) for m in REDUCED}
    print("params: " + ("protocol defaults" if args.full else
                        "; ".join(f"{m} {p}" for m, p in sizes.items() if p) + "; others defaults"))
    header = ["code"] + [f"{m.replace('modularity_explicitness', 'mod_expl')}.{k}" for m, k in COLUMNS] + \
             ["udr.udr_lasso", "udr.udr_spearman"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, code in codes.items():
        values = {}
        for metric in dict.fromkeys(m for m, _ in COLUMNS):
            values[metric] = METRICS[metric](code, gt, np.random.default_rng(0), **sizes[metric])
        u = udr_of(code, gt, np.random.default_rng(0))
        cells = [f"{values[m][k]:.3f}" for m, k in COLUMNS] + [f"{u['udr_lasso']:.3f}", f"{u['udr_spearman']:.3f}"]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


def dci_es_targets_table(gt, codes, params):
    """DCI-ES explicitness per code: mixed probes (default) and classification only, E
    overall and per factor, with the difference."""
    print(f"dci_es params: {params or 'protocol defaults'}; seed 0")
    names = gt.factor_names
    print("| code | targets | E | " + " | ".join(f"E {n}" for n in names) + " | I (best probe) |")
    print("|---|---|---:|" + "---:|" * len(names) + "---:|")
    for code_name, code in codes.items():
        row = {}
        for targets in ("mixed", "classification"):
            v = METRICS["dci_es"](code, gt, np.random.default_rng(0), targets=targets, **params)
            row[targets] = v
            cells = [f"{v['explicitness']:.3f}"] + [f"{v.get('explicitness_' + n, float('nan')):.3f}" for n in names]
            print(f"| {code_name} | {targets} | " + " | ".join(cells) + f" | {v['informativeness_test']:.3f} |",
                  flush=True)
        print(f"|  | difference | {row['mixed']['explicitness'] - row['classification']['explicitness']:+.3f} |"
              + " |" * (len(names) + 1), flush=True)


if __name__ == "__main__":
    main()
