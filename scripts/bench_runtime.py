"""Runtime settings measured: `imgcls train` with each variant of --set, alternated in fresh processes.

    python scripts/bench_runtime.py                         # threads and XLA on the bench dataset
    python scripts/bench_runtime.py --variants "" "runtime.jit_compile=true" --rounds 3
    python scripts/bench_runtime.py --size 64 --model simple_cnn --epochs 4
    python scripts/bench_runtime.py --variants runtime.precision=float32 runtime.precision=mixed_bfloat16 \
        --images 600 --epochs 3 --rounds 2          # bf16 on this kind of CPU (docs/benchmarks.md)

This is how imgcls' runtime defaults were chosen ("measure before you choose
defaults"): every variant trains the same config on the same synthetic
dataset (scripts/bench.py's celebrity-shaped JPEGs), variants alternate
round by round so a change in machine load hits all of them alike, and the
script prints each variant's steady-state training images/s (imgcls' own
figure, first epoch excluded) and peak RSS as medians, with ratios against
the first variant (the defaults). Run it on your own machine to check a
setting before you change it. It starts with the CPU's kind and flags, so a
result can be recorded against the kind of machine it was measured on.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench import imgcls_config, make_dataset, spread  # noqa: E402

DEFAULT_VARIANTS = ["", "runtime.inter_op_threads=1", "runtime.threads=1", "runtime.jit_compile=true"]


def train_once(config: Path, variant: str, model: str, runs_dir: Path) -> dict:
    """One `imgcls train` in a fresh process; returns images/s and peak RSS (MB)."""
    args = [sys.executable, "-m", "imgcls", "train", str(config), "--runs-dir", str(runs_dir), "--name", "variant",
            "--set", f"model.name={model}", "--set", "evaluate.after_training=false"]
    for item in filter(None, variant.split()):
        args += ["--set", item]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(args)}\n{proc.stderr.read().decode()[-3000:]}")
    metrics = json.loads(((runs_dir / "latest").resolve() / "metrics.json").read_text())
    return {"images_per_s": metrics["train_images_per_s"], "peak_rss_mb": usage.ru_maxrss / 1024}


def describe_cpu() -> str:
    """The CPU model, its kind for runtime.precision auto, the flags that decide it, and auto's choice."""
    from imgcls.runtime import CPU_KINDS, choose_precision, cpu_flags, cpu_kind

    flags = cpu_flags()
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown") if Path("/proc/cpuinfo").is_file() else "unknown"
    relevant = sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_fp16"})
    precision, why = choose_precision("auto", [], flags)
    return (f"CPU: {model}, {os.cpu_count()} cores; kind {cpu_kind(flags)} ({CPU_KINDS[cpu_kind(flags)]}); "
            f"flags {' '.join(relevant) or 'none'}\nauto picks {precision} ({why})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS,
                        help='space-separated KEY=VALUE sets per variant; "" is the defaults (put it first)')
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=2, help="per run; the first epoch is excluded from images/s")
    parser.add_argument("--model", default="celebs_cnn")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    print(describe_cpu())
    work = Path(tempfile.mkdtemp(prefix="imgcls-bench-runtime-"))
    config = imgcls_config(work / "bench.yaml", make_dataset(work / "data", args.images), args.size, args.epochs)
    print(f"{args.model} at {args.size}x{args.size}, {args.images} images, {args.epochs} epochs per run, "
          f"{args.rounds} rounds; work folder {work}")
    results: dict[str, list[dict]] = {v: [] for v in args.variants}
    for round_ in range(args.rounds):
        for variant in args.variants:
            r = train_once(config, variant, args.model, work / "runs")
            results[variant].append(r)
            print(f"  round {round_ + 1} {variant or 'defaults':32} {r['images_per_s']:7.1f} images/s, "
                  f"peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
    base = statistics.median(r["images_per_s"] for r in results[args.variants[0]])
    print(f"\n{'variant':34}{'images/s':>20}{'ratio':>8}{'peak RSS MB':>16}")
    for variant, rows in results.items():
        rate = [r["images_per_s"] for r in rows]
        print(f"{variant or 'defaults':34}{spread(rate, '.1f'):>20}{statistics.median(rate) / base:>7.2f}x"
              f"{statistics.median(r['peak_rss_mb'] for r in rows):>16.0f}")


if __name__ == "__main__":
    main()
