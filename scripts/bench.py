"""Benchmark: imgcls against the hand-written Keras script it replaces.

    python scripts/bench.py --quick      # about two minutes: routine check
    python scripts/bench.py              # the figures docs/benchmarks.md records

It builds a synthetic, learnable folder-per-class JPEG dataset shaped like the
celebrity task (17 classes, 1,800 images of mixed sizes around 180-400 px),
then alternates A B A B, each in a fresh process:

  A  the seeds' script, faithfully: image_dataset_from_directory for both
     subsets, .cache().shuffle(1000).prefetch(AUTOTUNE), the celebrity CNN,
     Adam with ExponentialDecay, CategoricalCrossentropy(from_logits=True),
     ModelCheckpoint + EarlyStopping;
  B  `imgcls train` on the equivalent config, with imgcls' defaults.

It prints medians (min-max) and B/A ratios of steady-state training images/s,
first-epoch time, total wall time, peak RSS and best validation accuracy;
achieved GFLOP/s against a matmul peak measured here; batched
`imgcls predict` against the seeds' one-image-at-a-time loop; the imgcls
input pipeline alone; and start-up times. Timings are never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()
CLASSES = 17


# --------------------------------------------------------------------------- the dataset


def make_dataset(root: Path, n_images: int, seed: int = 0) -> Path:
    """Class k: a background hue, a disc of another hue at a random place, stripes of its own angle, noise."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    for i in range(n_images):
        k = i % CLASSES
        w, h = (int(v) for v in rng.integers(180, 401, size=2))
        hue = np.array([np.cos(2 * np.pi * k / CLASSES), np.cos(2 * np.pi * (k / CLASSES + 1 / 3)),
                        np.cos(2 * np.pi * (k / CLASSES + 2 / 3))])
        base = 128 + 80 * hue
        yy, xx = np.mgrid[0:h, 0:w]
        angle = np.pi * k / CLASSES
        stripes = 30 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) / 6.0)
        pixels = base[None, None, :] + stripes[..., None] + rng.normal(0, 30, (h, w, 3))
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        r = int(rng.integers(20, 60))
        cx, cy = int(rng.integers(r, w - r)), int(rng.integers(r, h - r))
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=tuple(int(v) for v in 128 - 80 * hue))
        folder = root / f"class_{k:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{i:05d}.jpg", quality=90)
    return root


# --------------------------------------------------------------------------- A: the seeds' script


def seed_script(data_dir: str, size: int, epochs: int, out: str) -> None:
    """The tutorial's code (seeds 000/004), with Keras 3 names; run in its own process."""
    import tensorflow as tf
    from tensorflow.keras import layers, models

    img_height = img_width = size
    batch_size = 32
    train_ds = tf.keras.preprocessing.image_dataset_from_directory(
        data_dir, validation_split=0.1, subset="training", label_mode="categorical", seed=123,
        image_size=(img_height, img_width), batch_size=batch_size)
    val_ds = tf.keras.preprocessing.image_dataset_from_directory(
        data_dir, validation_split=0.1, subset="validation", label_mode="categorical", seed=123,
        image_size=(img_height, img_width), batch_size=batch_size)
    class_names = train_ds.class_names
    AUTOTUNE = tf.data.AUTOTUNE
    train_ds = train_ds.cache().shuffle(1000).prefetch(buffer_size=AUTOTUNE)
    val_ds = val_ds.cache().prefetch(buffer_size=AUTOTUNE)

    model = models.Sequential([
        layers.Input(shape=(img_height, img_width, 3)),
        layers.Rescaling(1.0 / 255),
        layers.Conv2D(16, (3, 3), activation="relu"),
        layers.AveragePooling2D((2, 2)),
        layers.Conv2D(32, (3, 3), activation="relu"),
        layers.AveragePooling2D((2, 2)),
        layers.Dropout(0.5),
        layers.Conv2D(64, (3, 3), activation="relu"),
        layers.AveragePooling2D((2, 2)),
        layers.Dropout(0.5),
        layers.Conv2D(128, (3, 3), activation="relu"),
        layers.Dropout(0.5),
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
        layers.Dense(len(class_names)),
    ])
    lr_schedule = tf.keras.optimizers.schedules.ExponentialDecay(1e-4, decay_steps=60, decay_rate=0.96, staircase=True)
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=lr_schedule),
                  loss=tf.keras.losses.CategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    checkpointer = tf.keras.callbacks.ModelCheckpoint(str(Path(out) / "best_model.weights.h5"), monitor="val_accuracy",
                                                      save_best_only=True, save_weights_only=True)
    earlystopper = tf.keras.callbacks.EarlyStopping(monitor="val_accuracy", min_delta=0.001, patience=20)
    timer = PhaseTimer()
    history = model.fit(train_ds, validation_data=val_ds, epochs=epochs,
                        callbacks=[timer, checkpointer, earlystopper], verbose=0)
    n_train = sum(int(x.shape[0]) for x, _ in train_ds)
    model.save(Path(out) / "seed_model.keras")
    json.dump({"train_images": n_train, "train_seconds": timer.train_seconds, "epoch_seconds": timer.epoch_seconds,
               "best_val_accuracy": max(history.history["val_accuracy"]), "class_names": class_names},
              open(Path(out) / "seed.json", "w"))


def PhaseTimer():
    """A Keras callback timing each epoch's training phase (validation excluded), as imgcls does."""
    import keras

    class _Timer(keras.callbacks.Callback):
        train_seconds: list = []
        epoch_seconds: list = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = self.train_end = time.perf_counter()

        def on_test_begin(self, logs=None):
            self.train_end = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.train_seconds.append(self.train_end - self.start)
            self.epoch_seconds.append(time.perf_counter() - self.start)

    return _Timer()


def seed_predict_loop(model_path: str, files: list[str], size: int) -> float:
    """The seeds' one-image-at-a-time prediction cell, in a loop; returns images/s."""
    import keras
    import tensorflow as tf
    from PIL import Image

    start = time.perf_counter()
    model = keras.saving.load_model(model_path)
    for path in files:
        img = Image.open(path)
        image = tf.image.resize(np.asarray(img), [size, size])
        img_array = tf.expand_dims(image, 0)
        predictions = model.predict(img_array, verbose=0)
        np.argmax(predictions)
    return len(files) / (time.perf_counter() - start)


# --------------------------------------------------------------------------- B: imgcls


def imgcls_config(path: Path, data_dir: Path, size: int, epochs: int) -> Path:
    import yaml

    config = {
        "data": {"dir": str(data_dir), "validation_split": 0.1, "seed": 123, "image_size": [size, size],
                 "batch_size": 32, "label_mode": "categorical"},
        "model": {"name": "celebs_cnn"},
        "train": {"epochs": epochs, "optimizer": "adam", "learning_rate": 1e-4,
                  "schedule": {"name": "exponential_decay", "decay_steps": 60, "decay_rate": 0.96, "staircase": True}},
        "callbacks": {"checkpoint": {"monitor": "val_accuracy"},
                      "early_stopping": {"enabled": True, "monitor": "val_accuracy", "min_delta": 0.001, "patience": 20}},
    }
    path.write_text(yaml.safe_dump(config))
    return path


# --------------------------------------------------------------------------- measuring


def run_child(args: list[str]) -> tuple[float, float]:
    """Run a command; return (wall seconds, peak RSS in MB) of that process alone."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(args)}\n{proc.stderr.read().decode()[-3000:]}")
    return wall, usage.ru_maxrss / 1024


def steady(train_seconds: list[float], images: int) -> float:
    return images / statistics.median(train_seconds[1:] or train_seconds)


def training_round(work: Path, data: Path, size: int, epochs: int, which: str) -> dict:
    out = Path(tempfile.mkdtemp(dir=work, prefix=which))
    if which == "A":
        wall, rss = run_child([sys.executable, str(HERE), "_seed", str(data), str(size), str(epochs), str(out)])
        r = json.load(open(out / "seed.json"))
        return {"images_per_s": steady(r["train_seconds"], r["train_images"]), "first_epoch_s": r["epoch_seconds"][0],
                "wall_s": wall, "peak_rss_mb": rss, "val_accuracy": r["best_val_accuracy"], "model": str(out / "seed_model.keras")}
    config = imgcls_config(out / "bench.yaml", data, size, epochs)
    wall, rss = run_child([sys.executable, "-m", "imgcls", "train", str(config), "--runs-dir", str(out / "runs"), "--name", "bench"])
    run = (out / "runs" / "latest").resolve()
    metrics = json.load(open(run / "metrics.json"))
    import csv

    first = float(next(csv.DictReader(open(run / "history.csv")))["seconds"])
    return {"images_per_s": metrics["train_images_per_s"], "first_epoch_s": first, "wall_s": wall, "peak_rss_mb": rss,
            "val_accuracy": metrics["best"]["val_accuracy"], "run": str(run), "precision": metrics["precision"]}


def matmul_peak(dtype_name: str, n: int = 2048, reps: int = 10) -> float:
    import tensorflow as tf

    dtype = getattr(tf, dtype_name)
    a = tf.cast(tf.random.normal((n, n)), dtype)
    b = tf.cast(tf.random.normal((n, n)), dtype)
    mm = tf.function(lambda: tf.matmul(a, b))
    mm().numpy()
    start = time.perf_counter()
    for _ in range(reps):
        mm().numpy()
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def training_gflop_per_image(size: int) -> float:
    """Forward FLOPs of the celebrity CNN's Conv2D and Dense layers, times 3 for forward + backward."""
    from imgcls.config import load_config
    from imgcls.models import build_model

    model = build_model(load_config(raw={"data": {"dir": "x", "image_size": size}, "model": {"name": "celebs_cnn"}}), CLASSES)
    flops = 0
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Conv2D":
            _, h, w, c_out = layer.output.shape
            kh, kw, c_in, _ = layer.kernel.shape
            flops += 2 * h * w * kh * kw * c_in * c_out
        elif kind == "Dense":
            flops += 2 * layer.kernel.shape[0] * layer.kernel.shape[1]
    return 3 * flops / 1e9


def pipeline_images_per_s(data: Path, size: int) -> tuple[float, float]:
    """imgcls' input pipeline alone: first pass (decode + resize + cache fill), then a cached epoch."""
    import itertools
    import math

    from imgcls.config import load_config
    from imgcls.data.pipeline import make_datasets
    from imgcls.data.plan import plan_data

    config = load_config(raw={"data": {"dir": str(data), "image_size": size, "validation_split": 0.1,
                                       "label_mode": "categorical"}})
    datasets = make_datasets(plan_data(config), config)
    images = len(datasets.train_files)
    steps = math.ceil(images / config.data.batch_size)
    batches = iter(datasets.train)
    rates = []
    for _ in range(2):  # one epoch's batches at a time
        start = time.perf_counter()
        for _ in itertools.islice(batches, steps):
            pass
        rates.append(images / (time.perf_counter() - start))
    return rates[0], rates[1]


def predict_rates(model_path: str, run: str, files: list[str], size: int) -> tuple[float, float]:
    from imgcls.infer.predict import predict_files

    seed_rate = seed_predict_loop(model_path, files, size)
    start = time.perf_counter()
    predict_files(Path(run), [Path(f) for f in files])
    return seed_rate, len(files) / (time.perf_counter() - start)


def startup_times(one_image: str, run: str, repeats: int = 5) -> dict[str, float]:
    commands = {
        "imgcls --help": [sys.executable, "-m", "imgcls", "--help"],
        "imgcls config error": [sys.executable, "-m", "imgcls", "train", "missing.yaml"],
        "imgcls predict one.jpg": [sys.executable, "-m", "imgcls", "predict", one_image, "--run", run],
        'python -c "import tensorflow"': [sys.executable, "-c", "import tensorflow"],
    }
    result = {}
    for name, args in commands.items():
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times.append(time.perf_counter() - start)
        result[name] = statistics.median(times)
    return result


# --------------------------------------------------------------------------- report


def spread(values: list[float], fmt: str) -> str:
    return f"{format(statistics.median(values), fmt)} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="600 images at 128x128, 3 epochs, one A B pair")
    parser.add_argument("--images", type=int, help="images in the synthetic dataset (default 1800, quick 600)")
    parser.add_argument("--size", type=int, help="training image size (default 224, quick 128)")
    parser.add_argument("--epochs", type=int, help="epochs per training run (default 5, quick 3)")
    parser.add_argument("--repeats", type=int, help="A B pairs (default 2, quick 1)")
    args = parser.parse_args()
    n_images = args.images or (600 if args.quick else 1800)
    size = args.size or (128 if args.quick else 224)
    epochs = args.epochs or (3 if args.quick else 5)
    repeats = args.repeats or (1 if args.quick else 2)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    work = Path(tempfile.mkdtemp(prefix="imgcls-bench-"))
    data = make_dataset(work / "data", n_images)
    print(f"dataset: {n_images} JPEGs, {CLASSES} classes, in {data}; training at {size}x{size}, {epochs} epochs, "
          f"{repeats} A/B pairs (A = seeds' script, B = imgcls defaults)\n")

    results: dict[str, list[dict]] = {"A": [], "B": []}
    for _ in range(repeats):
        for which in ("A", "B"):
            results[which].append(training_round(work, data, size, epochs, which))
            r = results[which][-1]
            print(f"  {which}: {r['images_per_s']:.1f} images/s, first epoch {r['first_epoch_s']:.1f} s, "
                  f"wall {r['wall_s']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB, val acc {r['val_accuracy']:.3f}")

    print(f"\n{'':24}{'A seed script':>22}{'B imgcls':>22}{'B/A':>8}")
    for key, label, fmt in (("images_per_s", "train images/s", ".1f"), ("first_epoch_s", "first epoch (s)", ".1f"),
                            ("wall_s", f"wall, {epochs} epochs (s)", ".1f"), ("peak_rss_mb", "peak RSS (MB)", ".0f"),
                            ("val_accuracy", "best val accuracy", ".3f")):
        a = [r[key] for r in results["A"]]
        b = [r[key] for r in results["B"]]
        print(f"{label:24}{spread(a, fmt):>22}{spread(b, fmt):>22}{statistics.median(b) / statistics.median(a):>7.2f}x")

    gflop = training_gflop_per_image(size)
    precision = results["B"][0]["precision"]
    peak = matmul_peak("bfloat16" if precision == "mixed_bfloat16" else "float32")
    for which in ("A", "B"):
        achieved = gflop * statistics.median(r["images_per_s"] for r in results[which])
        print(f"{which}: {achieved:.0f} GFLOP/s achieved ({gflop:.2f} GFLOP per training image), "
              f"{achieved / peak:.0%} of the {peak:.0f} GFLOP/s matmul peak here ({'bf16' if precision == 'mixed_bfloat16' else 'float32'})")
    print(f"imgcls precision chosen by runtime.precision auto: {precision}")

    first_pass, cached = pipeline_images_per_s(data, size)
    consumed = statistics.median(r["images_per_s"] for r in results["B"])
    print(f"\ninput pipeline alone: {first_pass:.0f} images/s decoding (first epoch), {cached:.0f} images/s from cache "
          f"= {cached / consumed:.1f}x what training consumes")

    files = sorted(str(p) for p in data.rglob("*.jpg"))[:500]
    seed_rate, imgcls_rate = predict_rates(results["A"][0]["model"], results["B"][0]["run"], files, size)
    print(f"predict {len(files)} images: seed loop {seed_rate:.1f} images/s, imgcls batched {imgcls_rate:.1f} images/s "
          f"= {imgcls_rate / seed_rate:.1f}x")

    print("\nstart-up, median of 5:")
    for name, seconds in startup_times(files[0], results["B"][0]["run"]).items():
        print(f"  {name:32}{seconds:6.2f} s")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_seed":
        seed_script(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    else:
        main()
