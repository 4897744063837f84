"""Console text of the info scores and the sandwich check H(X) - D <= I_q <= R."""
from __future__ import annotations

import math

from disentangle.evaluation.information.units import bits


# rounding of the float32 codes: an encoder that separates every image puts I_q at H(X)
# with a standard error near 0, and the estimate then sits ~1e-7 nats off it either way
ROUNDING_NATS = 1e-5


def sandwich_violations(v: dict) -> list[str]:
    """Which side of H(X) - D <= I_q <= R an estimate breaks by more than its standard error
    (plus :data:`ROUNDING_NATS`). Sides whose quantities ``v`` lacks (``info_posterior`` has
    no H(X) or D) are not checked."""
    out = []
    se_iq = float(v.get("i_q_se_nats") or 0.0) + ROUNDING_NATS
    if v["i_q_nats"] > v["rate_nats"] + se_iq:
        out.append(f"I_q = {v['i_q_nats']:.3f} exceeds R = {v['rate_nats']:.3f} by more than its "
                   f"standard error ({se_iq:.3f}): a bug or too few samples")
    if v.get("is_bound") and math.isfinite(v["i_gen_lower_nats"]):
        se = math.hypot(se_iq, float(v.get("distortion_se_nats") or 0.0))
        if v["i_gen_lower_nats"] > v["i_q_nats"] + se:
            out.append(f"H(X) - D = {v['i_gen_lower_nats']:.3f} exceeds I_q = {v['i_q_nats']:.3f} by more "
                       f"than the combined standard error ({se:.3f}): a bug or too few samples")
    # I_q <= H(X) always (Z is computed from X); flag only a clear excess (3 SE), since
    # an encoder that separates all images puts I_q right at H(X)
    if "entropy_x_nats" in v and v["i_q_nats"] > v["entropy_x_nats"] + 3 * se_iq:
        out.append(f"I_q = {v['i_q_nats']:.3f} exceeds H(X) = {v['entropy_x_nats']:.3f} by more than "
                   f"3 standard errors: a bug")
    return out


def format_summary(v: dict) -> str:
    """Text for the CLI: the quantities in nats and bits and the sandwich H(X) - D <= I_q <= R."""
    def row(name, nats, se=None, note=""):
        se_txt = f" ± {se:.3f}" if se is not None and math.isfinite(se) else ""
        return f"  {name:<26}{nats:>10.3f}{se_txt:<10} nats {bits(nats):>10.3f} bits  {note}".rstrip()

    bound = bool(v.get("is_bound"))
    # why H(X) - D is no bound (older scores: only the gaussian decoder was none)
    reason = v.get("no_bound_reason") or (f"the {v['likelihood']} decoder's D is a density, not a probability "
                                          f"of the discrete pixels")
    lines = ["information (nats; bits = nats / ln 2)",
             row("H(X)", v["entropy_x_nats"], note=f"exact: {int(v['num_distinct_images']):,} distinct images, "
                                                    f"log N = {v['log_num_images_nats']:.3f}"),
             row("distortion D", v["distortion_nats"], v["distortion_se_nats"],
                 note=f"{v['likelihood']} decoder, {int(v['distortion_images']):,} images"
                      + (f", {v['pixels']} pixels" if v.get("pixels") else "")
                      + ("" if bound else ": not a discrete likelihood of them")),
             row("rate R", v["rate_nats"], note="upper bound on I_rep"),
             row("I_q(X;Z)", v["i_q_nats"], v["i_q_se_nats"],
                 note=f"{int(v['i_q_samples']):,} samples against all posteriors")]
    if bound:
        lines.append(row("H(X) - D", v["i_gen_lower_nats"], v["distortion_se_nats"], note="lower bound on I_gen"))
    else:
        lines.append(f"  {'H(X) - D':<26}{'—':>10}  NOT a bound: {reason}")
    lines += [row("marginal KL R - I_q", v["marginal_kl_nats"], v["i_q_se_nats"]),
              row("total correlation", v["total_correlation_nats"], v["total_correlation_se_nats"]),
              row("dimension-wise KL", v["dimension_wise_kl_nats"], v["dimension_wise_kl_se_nats"])]
    kl = [v[k] for k in sorted((k for k in v if k.startswith("kl_dim_")), key=lambda k: int(k[7:]))]
    lines.append(f"  active dims {int(v['active_dims'])}/{len(kl)} (mean KL > {v['active_threshold_nats']:g} nats); "
                 f"KL per dim: " + " ".join(f"{k:.2f}" for k in kl))
    if bound:
        lines.append(f"  sandwich  H(X) - D <= I_q <= R :  {v['i_gen_lower_nats']:.3f} <= "
                     f"{v['i_q_nats']:.3f} <= {v['rate_nats']:.3f}")
    else:
        lines.append(f"  sandwich  I_q <= R :  {v['i_q_nats']:.3f} <= {v['rate_nats']:.3f}  "
                     f"(no lower bound: the {v['likelihood']} decoder's D is no discrete likelihood of these pixels)")
    problems = sandwich_violations(v)
    lines += [f"  WARNING: {p}" for p in problems] or ["  sandwich holds (within standard errors)"]
    return "\n".join(lines)
