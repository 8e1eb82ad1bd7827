"""The acceptance measurement: imgcls' strong recipe against the seed recipe, at equal wall-clock budgets.

    python scripts/recipe_vs_seed.py                      # 2 datasets x 2 recipes x 2 seeds x 2 minutes
    python scripts/recipe_vs_seed.py --minutes 1 --seeds 1 --datasets digits   # a quick look
    python scripts/recipe_vs_seed.py --datasets digits --recipes strong \
        --strong-set data.image_size=32 --strong-epochs '{"digits": 15}'  # digits at their own 32 px

Recipes (both get `train.time_limit_minutes` = --minutes of training time;
evaluation after training is off, it is not part of the budget):

  seed    configs/celebs.yaml as the tutorials train it: the celebrity CNN (4 conv,
          average pooling, dropout, flatten, dense 128), Adam 1e-4 with exponential
          decay (x0.96 every 60 steps, staircase), early stopping (patience 20), no
          augmentation; train.epochs 1000, so the time limit ends it.
  strong  configs/recipes/strong.yaml: BatchNorm CNN with a GAP head, augment light,
          AdamW 3e-3 with weight decay 0.05, cosine decay with 1 warmup epoch, label
          smoothing 0.1; train.epochs set per dataset (--strong-epochs)
          so the cosine schedule ends inside the budget.

Datasets, both at 64x64 (the celebrity CNN needs at least about 48 px):

  digits  data/digits, shipped: 1,797 grayscale digits, 10 classes (flip off: a
          mirrored digit is not a digit)
  shapes  scripts/make_shapes.py: 960 colour images, 12 classes of shape x texture x
          palette with clutter, made in a temporary folder

Each (dataset, seed) pair uses that seed for both the train/validation split
(data.seed) and the weights and shuffling (runtime.seed), so the two recipes
see the same split. Every run is a fresh `imgcls train` process. It prints the
best validation accuracy of each run and, per dataset and recipe, the mean and
the spread (min-max) over seeds, as a Markdown table.
"""

from __future__ import annotations

import argparse
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
SEED_RECIPE = ["train.epochs=1000", "data.validation_split=0.2"]
STRONG_EPOCHS = {"digits": 15, "shapes": 30}  # chosen so the schedule ends inside a 2-minute budget on a quiet 2-core CPU


def train_run(config: Path, sets: list[str], runs_dir: Path, name: str) -> dict:
    """`imgcls train` in a fresh process; returns its metrics.json."""
    args = [sys.executable, "-m", "imgcls", "train", str(config), "--runs-dir", str(runs_dir), "--name", name]
    for item in sets:
        args += ["--set", item]
    proc = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(((runs_dir / "latest").resolve() / "metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=2.0, help="training budget of every run")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--recipes", nargs="+", default=["seed", "strong"], choices=["seed", "strong"])
    parser.add_argument("--strong-set", action="append", default=[], metavar="KEY=VALUE",
                        help="an extra --set for the strong recipe only, e.g. data.image_size=32 (repeatable)")
    parser.add_argument("--strong-epochs", type=json.loads, default=STRONG_EPOCHS,
                        help='epochs of the strong recipe per dataset, as JSON, e.g. \'{"digits": 30}\'')
    args = parser.parse_args()

    from make_shapes import make_shapes

    work = Path(tempfile.mkdtemp(prefix="recipe_vs_seed-"))
    folders = {"digits": ROOT / "data" / "digits", "shapes": make_shapes(work / "shapes")}
    results: dict[tuple[str, str], list[dict]] = {}
    for dataset in args.datasets:
        for seed in range(1, args.seeds + 1):
            common = [f"data.dir={folders[dataset]}", "data.image_size=64", "data.label_mode=categorical",
                      f"data.seed={seed}", f"runtime.seed={seed}", f"train.time_limit_minutes={args.minutes}",
                      "evaluate.after_training=false", *DATASETS[dataset]]
            recipes = {
                "seed": (ROOT / "configs" / "celebs.yaml", common + SEED_RECIPE),
                "strong": (ROOT / "configs" / "recipes" / "strong.yaml",
                           common + [f"train.epochs={args.strong_epochs[dataset]}", *args.strong_set]),
            }
            for recipe in args.recipes:
                config, sets = recipes[recipe]
                metrics = train_run(config, sets, work / "runs", f"{dataset}-{recipe}-{seed}")
                row = {"val_accuracy": metrics["best"].get("val_accuracy", 0.0), "epochs": metrics["epochs_run"],
                       "wall_time_s": metrics["wall_time_s"], "images_per_s": metrics["train_images_per_s"],
                       "status": metrics["status"]}
                results.setdefault((dataset, recipe), []).append(row)
                print(f"{dataset:7s} {recipe:7s} seed {seed}: val_accuracy {row['val_accuracy']:.4f} after "
                      f"{row['epochs']} epochs, {row['wall_time_s']:.0f} s ({row['status']})", flush=True)

    print(f"\nbudget {args.minutes:g} min of training per run, {args.seeds} seeds; runs in {work}\n")
    print("| dataset | recipe | val accuracy, mean | spread (min-max) | per seed | epochs in budget |")
    print("|---|---|---|---|---|---|")
    for (dataset, recipe), rows in results.items():
        accs = [r["val_accuracy"] for r in rows]
        print(f"| {dataset} | {recipe} | {statistics.mean(accs):.3f} | {min(accs):.3f}-{max(accs):.3f} | "
              f"{', '.join(f'{a:.3f}' for a in accs)} | {', '.join(str(r['epochs']) for r in rows)} |")


if __name__ == "__main__":
    main()
