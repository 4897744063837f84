"""The dSprites variants' codes table against the protocol's fresh draws.

For color-, noisy- and scream-dSprites the observation is random given the factors. The
codes table encodes one seeded realisation per index (``images()``); disentanglement_lib's
metrics encode a fresh observation per sample (``evaluate --protocol-encode`` here). This
trains one short model per variant on a dSprites sub-grid and scores it both ways with the
same metric seed, so the factor draws are identical and only the nuisance differs.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/bench_variant_codes.py --out /tmp/variants

The Scream file here is a synthetic 400x300 JPEG (no download on this machine): the crop and
colour draws are the protocol's, the painting is not (docs/datasets.md says so).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

PARAMS = {"mig": {"num_train": 2000}, "sap": {"num_train": 2000, "num_test": 1000},
          "factor_vae": {"num_train": 200, "num_eval": 100, "num_variance_estimate": 2000},
          "beta_vae": {"num_train": 200, "num_eval": 100}}
HEADLINE = {"mig": "discrete_mig", "sap": "sap_score", "factor_vae": "eval_accuracy", "beta_vae": "eval_accuracy"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/variant_codes")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--variants", default="color-dsprites,noisy-dsprites,scream-dsprites")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ["DISENTANGLE_DATA_DIR"] = str(out)
    from PIL import Image

    from disentangle.config import TrainConfig
    from disentangle.data.convert import fetch_dataset
    from disentangle.data.dsprites import render_dataset
    from disentangle.data.ground_truth import GroundTruth
    from disentangle.evaluation.evaluate import evaluate_run
    from disentangle.train import train

    data = out / "dsprites-sub.h5"
    if not data.is_file():
        gt = GroundTruth.dsprites().subgrid({"orientation": range(0, 40, 10), "pos_x": range(0, 32, 4),
                                             "pos_y": range(0, 32, 4)})
        render_dataset(data, gt)
    if not (out / "scream.h5").is_file():
        yy, xx = np.mgrid[0:300, 0:400]
        img = np.stack([(xx * 0.6) % 256, (yy * 0.8) % 256, ((xx + yy) * 0.3) % 256], axis=2).astype(np.uint8)
        Image.fromarray(img).save(out / "scream.jpg", quality=90)
        fetch_dataset("scream-dsprites", out=out / "scream.h5", file=out / "scream.jpg")
    rows = []
    for variant in args.variants.split(","):
        cfg = TrainConfig(dataset=variant, data=str(data), steps=args.steps, batch_size=64, latent_dim=6,
                          architecture="dlib", beta=4.0, threads=1, device="cpu", checkpoint_every=args.steps,
                          log_every=100)
        t0 = time.perf_counter()
        run = train(cfg, out / variant)
        trained = time.perf_counter() - t0
        scores = {}
        for mode in ("table", "protocol"):
            t0 = time.perf_counter()
            res = evaluate_run(run, metrics=list(PARAMS), seed=0, protocol_encode=mode == "protocol",
                               params=PARAMS, threads=1, progress=False)
            scores[mode] = ({m: res[m]["values"][HEADLINE[m]] for m in PARAMS}, time.perf_counter() - t0)
            # keep each mode's scores.json entries apart
            (run / f"scores-{mode}.json").write_text(json.dumps(res, default=str))
        rows.append((variant, trained, scores))
        print(f"{variant}: trained {args.steps} steps in {trained:.0f} s", flush=True)
    print("\n| variant | metric | table | protocol (fresh draws) | protocol - table |")
    print("|---|---|---|---|---|")
    for variant, _, scores in rows:
        for m in PARAMS:
            a, b = scores["table"][0][m], scores["protocol"][0][m]
            print(f"| {variant} | {m} ({HEADLINE[m]}) | {a:.4f} | {b:.4f} | {b - a:+.4f} |")
    for variant, _, scores in rows:
        print(f"{variant}: table path {scores['table'][1]:.0f} s (encodes the table once), "
              f"protocol path {scores['protocol'][1]:.0f} s")


if __name__ == "__main__":
    main()
