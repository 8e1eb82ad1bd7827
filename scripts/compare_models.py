"""Lightweight variants: models trained on the same data for the same epochs, side by side.

    python scripts/compare_models.py                    # the shipped digits, 64x64, 10 epochs each
    python scripts/compare_models.py --dataset shapes   # the harder synthetic colour set
    python scripts/compare_models.py --epochs 3         # quicker

Models (all from scratch; imgcls adds the same softmax output layer):

  celebs_cnn            the seeds' CNN (4 conv, average pooling, flatten, dense 128)
  simple_cnn bn gap     the CNN of configs/recipes/strong.yaml (4 conv-BatchNorm blocks, GAP head)
  vgg16 flatten x0.25   VGG-16 with its fc 4096-4096 head, every width a quarter
  vgg16 gap x0.25       VGG-16 with global average pooling instead of flatten + fc
  mobilenet_v3_small    keras.applications, weights none
  efficientnet_b0       keras.applications, weights none

VGG-16 runs at width 0.25 because full width (134 M parameters with the
flatten head at 224 px) is not feasible on a 2-core CPU in minutes; the table
also gives both heads' parameter counts at full width and 224 px.

Every model gets the same recipe (Adam 3e-4, categorical labels, no
augmentation, batch 32), the same split (data.seed 1) and the same epochs, on
the shipped digits (1,797 images, 10 classes, read as RGB so every backbone
takes them) or the synthetic 12-class colour set of scripts/make_shapes.py.
Columns: parameters, best.keras file size, steady-state training images/s
(imgcls' own figure, first epoch excluded) and best validation accuracy.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

import sys  # noqa: E402

sys.path.insert(0, str(HERE))

MODELS = {
    "celebs_cnn (seeds)": ["model.name=celebs_cnn"],
    "simple_cnn bn gap": ["model.name=simple_cnn", "model.filters=[16,32,64,128]", "model.batch_norm=true",
                          "model.head=gap", "model.dense=[]", "model.head_dropout=0.2"],
    "vgg16 flatten x0.25": ["model.name=vgg16", "model.head=flatten", "model.width=0.25"],
    "vgg16 gap x0.25": ["model.name=vgg16", "model.head=gap", "model.width=0.25"],
    "mobilenet_v3_small": ["model.name=backbone", "model.backbone=mobilenet_v3_small", "model.weights=none"],
    "efficientnet_b0": ["model.name=backbone", "model.backbone=efficientnet_b0", "model.weights=none"],
}


def full_width_vgg_params(classes: int) -> dict[str, int]:
    """VGG-16's parameter counts at full width, 224 px (built, not trained)."""
    from imgcls.config import load_config
    from imgcls.models import build_model

    counts = {}
    for head in ("flatten", "gap"):
        config = load_config(raw={"data": {"dir": "x", "image_size": 224}, "model": {"name": "vgg16", "head": head}})
        counts[head] = int(build_model(config, classes).count_params())
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["digits", "shapes"], default="digits")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    args = parser.parse_args()

    from make_shapes import make_shapes
    from recipe_vs_seed import train_run

    work = Path(tempfile.mkdtemp(prefix="compare_models-"))
    data = ROOT / "data" / "digits" if args.dataset == "digits" else make_shapes(work / "shapes")
    config = work / "compare.yaml"
    config.write_text(f"data: {{dir: {data}, image_size: [{args.size}, {args.size}], batch_size: 32, "
                      "label_mode: categorical, color_mode: rgb, augment_flip: none, seed: 1}\n"
                      f"train: {{epochs: {args.epochs}, optimizer: adam, learning_rate: {args.learning_rate}}}\n"
                      "evaluate: {after_training: false}\nruntime: {seed: 1}\n")
    rows = []
    for label, sets in MODELS.items():
        metrics = train_run(config, sets, work / "runs", label.split()[0])
        size_mb = ((work / "runs" / "latest").resolve() / "best.keras").stat().st_size / 1e6
        rows.append((label, metrics["total_params"], size_mb, metrics["train_images_per_s"],
                     metrics["best"].get("val_accuracy", 0.0)))
        print(f"{label}: {rows[-1]}", flush=True)

    print(f"\n{args.epochs} epochs at {args.size}x{args.size} on {args.dataset}, Adam {args.learning_rate:g}; runs in {work}\n")
    print("| model | parameters | best.keras | training images/s | val accuracy |")
    print("|---|---:|---:|---:|---:|")
    for label, params, size_mb, speed, acc in rows:
        print(f"| {label} | {params:,} | {size_mb:.1f} MB | {speed:.1f} | {acc:.3f} |")
    classes = 10 if args.dataset == "digits" else 12
    counts = full_width_vgg_params(classes)
    print(f"\nVGG-16 at full width, 224 px, {classes} classes: flatten {counts['flatten']:,} parameters, gap {counts['gap']:,}.")


if __name__ == "__main__":
    main()
