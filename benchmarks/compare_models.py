"""Same recipe, several models (or settings), several seeds: top-1 mean and
spread, and training images/s as a ratio to the first entry of the run.

    KERAS_BACKEND=torch python -m benchmarks.compare_models --config digits_sl_vit \\
        --models vit,sl_vit --seeds 0,1,2 --set epochs=5

Each (model, seed) is an ordinary resumable run of `keras_smallvit.training`
in `<workdir>/<model>_seed<k>`: an interrupted comparison picks up where it
stopped. `--variants` compares settings instead of models:
`--variants "plain:;sata:techniques=sata"` (name:key=value,key=value).
"""

import argparse
import dataclasses
import os

import keras
import numpy as np

from keras_smallvit import training
from training.configs import get_config


def parse_variants(models, variants):
    if variants:
        result = []
        for item in variants.split(";"):
            name, _, assignments = item.partition(":")
            result.append((name.strip(), [a for a in assignments.split(",") if a.strip()]))
        return result
    return [(model, [f"model={model}"]) for model in models.split(",")]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="digits_sl_vit")
    parser.add_argument("--models", default="vit,sl_vit")
    parser.add_argument("--variants", default=None, help='"name:key=value,...;name2:..." (instead of --models)')
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="applies to every run")
    parser.add_argument("--workdir", default="runs/compare")
    args = parser.parse_args(argv)
    base = training.apply_overrides(get_config(args.config), args.set + ["export=false"])
    seeds = [int(s) for s in args.seeds.split(",")]

    rows = []
    for name, assignments in parse_variants(args.models, args.variants):
        results = []
        for seed in seeds:
            config = training.apply_overrides(base, assignments)
            config = dataclasses.replace(config, seed=seed, workdir=os.path.join(args.workdir, f"{name}_seed{seed}"))
            config.validate()
            print(f"=== {name}, seed {seed} -> {config.workdir}", flush=True)
            results.append(training.train(config, verbose=2))
            keras.backend.clear_session()
        rows.append((name, results))

    print(f"\nbackend {keras.backend.backend()}, config {args.config} {' '.join(args.set)}, seeds {seeds}")
    print("| variant | final top-1 (mean ± std) | best top-1 | train img/s | vs first |")
    print("|---|---|---|---|---|")
    baseline = None
    for name, results in rows:
        final = np.array([r["final_top1"] for r in results])
        best = np.array([r["best_top1"] for r in results])
        # None for a run that was finished before this command (evaluated again, not timed).
        speeds = [r["train_images_per_second"] for r in results if r["train_images_per_second"] is not None]
        speed = float(np.mean(speeds)) if speeds else None
        baseline = baseline or speed
        print(
            f"| {name} | {final.mean():.4f} ± {final.std(ddof=1) if len(final) > 1 else 0:.4f} "
            f"| {best.mean():.4f} | {'-' if speed is None else f'{speed:.1f}'} "
            f"| {'-' if speed is None or not baseline else f'{speed / baseline:.2f}'} |"
        )


if __name__ == "__main__":
    main()
