"""The acceptance measurement: imgcls' strong recipe against the seed recipe, at equal wall-clock budgets.

    python scripts/recipe_vs_seed.py                      # 2 datasets x 2 recipes x 2 seeds x 2 minutes
    python scripts/recipe_vs_seed.py --minutes 1 --seeds 1 --datasets digits   # a quick look
    python scripts/recipe_vs_seed.py --variant "resnet=model={name: resnet_small}"   # a variant of the strong recipe, too
    python scripts/recipe_vs_seed.py --figure time_to_accuracy.png             # and the curves as a figure

Recipes, each given `train.time_limit_minutes` = --minutes of training time and
`train.epochs: 1000` as the cap, as a user with a budget runs them (evaluation
after training is off, it is not part of the budget):

  seed    configs/celebs.yaml as the tutorials train it: the celebrity CNN (4 conv,
          average pooling, dropout, flatten, dense 128), Adam 1e-4 with exponential
          decay (x0.96 every 60 steps, staircase), early stopping (patience 20), no
          augmentation.
  strong  configs/recipes/strong.yaml: BatchNorm CNN with a GAP head, augment light,
          AdamW 3e-3 with weight decay 0.05, cosine decay with 1 warmup epoch laid
          over the epochs that fit the budget, label smoothing 0.1.
  NAME    --variant NAME=KEY=VALUE[,KEY=VALUE...]: the strong recipe with these --set's.

Datasets, both at 64x64 (the celebrity CNN needs at least about 48 px):

  digits  data/digits, shipped: 1,797 grayscale digits, 10 classes (flip off: a
          mirrored digit is not a digit)
  shapes  scripts/make_shapes.py: 960 colour images, 12 classes of shape x texture x
          palette with clutter, made in a temporary folder

Each (dataset, seed) pair uses that seed for both the train/validation split
(data.seed) and the weights and shuffling (runtime.seed), so every recipe sees
the same split. Every run is a fresh `imgcls train` process. It prints, per
dataset and recipe, the best validation accuracy (mean and spread over seeds)
and the time to accuracy: the training seconds (history.csv's per-epoch
seconds, validation included) each run needed to reach the seed recipe's best
accuracy on the same seed, and that time as a fraction of the seed recipe's
own time to its best. --figure draws best-so-far accuracy against seconds.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

DATASETS = {
    "digits": ["data.color_mode=grayscale", "data.augment_flip=none"],
    "shapes": ["data.color_mode=rgb"],
}
SEED_RECIPE = ["data.validation_split=0.2"]


def train_run(config: Path, sets: list[str], runs_dir: Path, name: str) -> tuple[dict, list[dict]]:
    """`imgcls train` in a fresh process; returns its metrics.json and history.csv rows."""
    args = [sys.executable, "-m", "imgcls", "train", str(config), "--runs-dir", str(runs_dir), "--name", name]
    for item in sets:
        args += ["--set", item]
    proc = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{proc.stderr[-3000:]}")
    run = (runs_dir / "latest").resolve()
    with open(run / "history.csv", newline="") as f:
        history = [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(f)]
    return json.loads((run / "metrics.json").read_text()), history


def best_so_far(history: list[dict]) -> list[tuple[float, float]]:
    """(training seconds so far, best validation accuracy so far) after each epoch."""
    points, seconds, best = [], 0.0, 0.0
    for row in history:
        seconds += row.get("seconds", 0.0)
        best = max(best, row.get("val_accuracy", 0.0))
        points.append((seconds, best))
    return points


def seconds_to(points: list[tuple[float, float]], accuracy: float) -> float | None:
    """The training seconds a run needed to reach `accuracy`, or None if it never did."""
    return next((seconds for seconds, best in points if best >= accuracy - 1e-9), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=2.0, help="training budget of every run")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--recipes", nargs="+", default=["seed", "strong"], choices=["seed", "strong"])
    parser.add_argument("--strong-set", action="append", default=[], metavar="KEY=VALUE",
                        help="an extra --set for the strong recipe only, e.g. data.image_size=32 (repeatable)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=KEY=VALUE[,KEY=VALUE]",
                        help="also the strong recipe with these --set's, reported as NAME (repeatable)")
    parser.add_argument("--figure", type=Path, help="write best-so-far accuracy against seconds to this PNG")
    args = parser.parse_args()
    variants = {v.split("=", 1)[0]: v.split("=", 1)[1].split(",") for v in args.variant}

    from make_shapes import make_shapes

    work = Path(tempfile.mkdtemp(prefix="recipe_vs_seed-"))
    folders = {"digits": ROOT / "data" / "digits", "shapes": make_shapes(work / "shapes")}
    results: dict[tuple[str, str], list[dict]] = {}
    for dataset in args.datasets:
        for seed in range(1, args.seeds + 1):
            common = [f"data.dir={folders[dataset]}", "data.image_size=64", "data.label_mode=categorical",
                      f"data.seed={seed}", f"runtime.seed={seed}", f"train.time_limit_minutes={args.minutes}", "train.epochs=1000",
                      "evaluate.after_training=false", *DATASETS[dataset]]
            strong = ROOT / "configs" / "recipes" / "strong.yaml"
            recipes = {
                "seed": (ROOT / "configs" / "celebs.yaml", common + SEED_RECIPE),
                "strong": (strong, common + args.strong_set),
                **{name: (strong, common + args.strong_set + sets) for name, sets in variants.items()},
            }
            for recipe in [*args.recipes, *variants]:
                config, sets = recipes[recipe]
                try:
                    metrics, history = train_run(config, sets, work / "runs", f"{dataset}-{recipe}-{seed}")
                except RuntimeError as exc:  # one recipe's mistake must not cost the others' runs
                    print(exc, file=sys.stderr, flush=True)
                    continue
                row = {"val_accuracy": metrics["best"].get("val_accuracy", 0.0), "epochs": metrics["epochs_run"],
                       "wall_time_s": metrics["wall_time_s"], "status": metrics["status"], "seed": seed,
                       "curve": best_so_far(history)}
                results.setdefault((dataset, recipe), []).append(row)
                print(f"{dataset:7s} {recipe:7s} seed {seed}: val_accuracy {row['val_accuracy']:.4f} after "
                      f"{row['epochs']} epochs, {row['wall_time_s']:.0f} s ({row['status']})", flush=True)

    print(f"\nbudget {args.minutes:g} min of training per run, {args.seeds} seeds; runs in {work}\n")
    print_table(results)
    if args.figure:
        draw(results, args.figure)
        print(f"\nwrote {args.figure}")


def print_table(results: dict[tuple[str, str], list[dict]]) -> None:
    print("| dataset | recipe | val accuracy, mean | spread (min-max) | per seed | epochs | s to the seed's best, per seed "
          "| x the seed's own time |")
    print("|---|---|---|---|---|---|---|---|")
    for (dataset, recipe), rows in results.items():
        accs = [r["val_accuracy"] for r in rows]
        reach, ratios = [], []
        for row in rows:
            seed_row = next((r for r in results.get((dataset, "seed"), []) if r["seed"] == row["seed"]), None)
            if seed_row is None:
                continue
            mine, theirs = seconds_to(row["curve"], seed_row["val_accuracy"]), seconds_to(seed_row["curve"], seed_row["val_accuracy"])
            reach.append("never" if mine is None else f"{mine:.0f}")
            ratios.append("-" if mine is None or not theirs else f"{mine / theirs:.2f}")
        print(f"| {dataset} | {recipe} | {statistics.mean(accs):.3f} | {min(accs):.3f}-{max(accs):.3f} | "
              f"{', '.join(f'{a:.3f}' for a in accs)} | {', '.join(str(r['epochs']) for r in rows)} | "
              f"{', '.join(reach) or '-'} | {', '.join(ratios) or '-'} |")


def draw(results: dict[tuple[str, str], list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({d for d, _ in results})
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4), squeeze=False)
    colours = {}
    for (dataset, recipe), rows in results.items():
        ax = axes[0][datasets.index(dataset)]
        colour = colours.setdefault(recipe, f"C{len(colours)}")
        for i, row in enumerate(rows):
            seconds, best = zip(*row["curve"]) if row["curve"] else ((), ())
            ax.step(seconds, best, where="post", color=colour, alpha=0.8, label=recipe if i == 0 else None)
        ax.set_title(dataset)
        ax.set_xlabel("training seconds")
        ax.set_ylabel("best validation accuracy so far")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
