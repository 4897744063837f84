"""`make demo`: a small β study on dSprites, from nothing to a report with figures.

    python -m disentangle.demo [--results results/demo] [--steps N] [--jobs N]

1. the dataset: the official file (data/dsprites.h5, or $DISENTANGLE_DATA) when present,
   else the rendered one, rendered now (about 15 s) when it is missing too;
2. a β-VAE for each β in {1, 4, 16} (one seed), trained side by side as separate
   processes sharing the cores;
3. every run evaluated with every registered metric but dci_es (DEMO_METRICS) and info;
4. results/demo/report.md and results/demo/figures/: rate–distortion, metrics against β,
   a latent traversal per β.

Sized to end in under 30 minutes on 2 CPU cores, evaluation included (README, "The demo").
Idempotent like every sweep: run it again and finished runs are skipped, an interrupted
one resumes.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from disentangle.errors import UserError

DEMO_BETAS = (1.0, 4.0, 16.0)
# Batches of 64 as in the paper runs; Adam at 5e-4, the rate of Burgess et al. (2018),
# since disentanglement_lib's 1e-4 needs many more steps than a CPU demo can give. 2,500
# steps are 160k images, a fifth of an epoch: enough to learn position and scale.
DEMO_STEPS = 2500
DEMO_SETTINGS = {"batch_size": 64, "lr": 5e-4, "latent_dim": 10, "checkpoint_every": 250, "log_every": 50}
# Every registered metric but dci_es, and info. dci_es costs about as much CPU as DCI itself
# (docs/performance.md, "The demo's budget"), which on 2 cores would take ~500 training steps
# from each model; DCI's own scores are in the report.
DEMO_METRICS = ("beta_vae", "factor_vae", "mig", "dci", "sap", "modularity_explicitness", "unsupervised",
                "irs", "infomec", "info")


def demo_study(steps: int = DEMO_STEPS):
    from disentangle.sweep import Study
    return Study(grid={"beta": list(DEMO_BETAS), "seed": [0]}, fixed={"steps": steps, **DEMO_SETTINGS},
                 metrics=DEMO_METRICS, name="demo")


def ensure_dataset(echo=print) -> Path:
    """The dataset rule's file; render dSprites first when there is none."""
    from disentangle.data.dsprites import DEFAULT_RENDERED_PATH, DataError, render_dataset, resolve_data_path
    try:
        path = resolve_data_path(None)
        if path.is_file():
            return path
    except DataError:
        pass
    from disentangle.data.ground_truth import GroundTruth
    gt = GroundTruth.dsprites()
    echo(f"no dSprites file found: rendering all {gt.num_images:,} images into {DEFAULT_RENDERED_PATH} "
         f"(the official file is used instead when data/dsprites.h5 exists: `disentangle data fetch`)")
    from disentangle.progress import bar as progress_bar   # shown only on a terminal
    with progress_bar(gt.num_images, "render", "img", mininterval=1.0) as bar:
        return render_dataset(DEFAULT_RENDERED_PATH, gt, progress=bar.update)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m disentangle.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default="results/demo", help="study directory (default results/demo)")
    parser.add_argument("--steps", type=int, default=DEMO_STEPS, help=f"training steps per run (default {DEMO_STEPS})")
    parser.add_argument("--jobs", type=int, default=len(DEMO_BETAS),
                        help="runs trained at once (default: all three, sharing the cores)")
    args = parser.parse_args(argv)
    from disentangle.sweep import run_sweep

    start = time.perf_counter()
    try:
        data = ensure_dataset()
        print(f"demo: β ∈ {{{', '.join(f'{b:g}' for b in DEMO_BETAS)}}}, {args.steps} steps each, data {data}")
        result = run_sweep(demo_study(args.steps), args.results, executor="local", jobs=args.jobs,
                           data=str(data), device="auto", echo=print)
    except UserError as exc:
        from disentangle.cli import user_message
        print(f"demo: error: {user_message(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # Ctrl-C or SIGTERM: the workers were stopped; finished runs and checkpoints stay
        print("demo: interrupted; run it again to resume where it stopped", file=sys.stderr)
        return 130
    minutes = (time.perf_counter() - start) / 60
    print(f"\ndemo finished in {minutes:.1f} min: {result.count('done')} of {len(result.runs)} runs done"
          + (f", {result.count('failed')} failed (see the report)" if result.count("failed") else ""))
    print(f"  report:  {result.report}")
    for fig in result.figures:
        print(f"  figure:  {fig}  (+ {fig.with_suffix('.pdf').name})")
    print(f"  runs:    {Path(args.results)}/<run>/ (config.json, model.pt, train_log.csv, scores.json)")
    return 0 if not result.count("failed") else 1


if __name__ == "__main__":
    sys.exit(main())
