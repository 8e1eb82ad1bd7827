"""Whole-process time of `imgcls predict ONE_IMAGE --model EXPORT`: a .tflite export without TensorFlow vs the TF path.

    python scripts/bench_predict_startup.py IMAGE TFLITE_EXPORT KERAS_EXPORT [TFLITE_EXPORT KERAS_EXPORT ...]
        [--imgcls PATH_TO_ANOTHER_VENVS_imgcls ...] [--repeats 5]

Each pair is the same run exported twice (`imgcls export RUN --format tflite`
and `--format keras`). Every command is started as a new process, as a user
types it; the best of --repeats is printed (the least disturbed by other
work on the machine). The .keras export is the baseline: the same image and
weights through TensorFlow. Also prints each process's labels, which must agree.
Figures: docs/benchmarks.md, "Predict without TensorFlow".
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path


def timed(command: list[str], repeats: int) -> tuple[float, str]:
    best, label = float("inf"), ""
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"{' '.join(command)} failed:\n{done.stderr}")
        best, label = min(best, elapsed), json.loads(done.stdout)[0]["label"]
    return best, label


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", type=Path)
    parser.add_argument("exports", type=Path, nargs="+", help="pairs: a tflite export folder, then a keras one")
    parser.add_argument("--imgcls", action="append", default=[], help="another venv's imgcls for the tflite exports")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if len(args.exports) % 2:
        parser.error("give export folders in pairs: tflite, keras")
    here = shutil.which("imgcls") or str(Path(sys.executable).parent / "imgcls")
    print(f"{'model':<44} {'imgcls':<28} {'best of ' + str(args.repeats):>10}  label")
    for lite, keras in zip(args.exports[::2], args.exports[1::2]):
        for program, export in [(p, lite) for p in [here, *args.imgcls]] + [(here, keras)]:
            seconds, label = timed([program, "predict", str(args.image), "--model", str(export), "--json"], args.repeats)
            venv = Path(program).parent.parent.name
            print(f"{str(export):<44} {venv:<28} {seconds:>9.3f}s  {label}")


if __name__ == "__main__":
    main()
