"""The `imgcls` command line.

Every command is a thin layer over a module: it parses arguments, calls one
function and prints the result. TensorFlow is imported inside the commands
that need it, so `imgcls --help`, `imgcls config` and argument errors answer
at once. A user error (`ImgclsError`) is printed as one line with exit code 2.
"""

from __future__ import annotations

import csv
import functools
import json
import shlex
import sys
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape

from imgcls.errors import ImgclsError

app = typer.Typer(
    help="Train image classifiers on a folder of photos (data/<class>/*.jpg) from one YAML config.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# No markup by default: file names, class names and messages print as they are ("photo[1].jpg", "[red]").
# Styled lines ask for markup and escape what they interpolate.
out = Console(soft_wrap=True, markup=False)
err = Console(stderr=True, soft_wrap=True, markup=False)

SET_HELP = "Override a config key, e.g. --set train.epochs=3 (value parsed as YAML; repeatable)."
RUNS_DIR_HELP = "Folder that holds the runs."
DEVICE_HELP = "auto (every GPU, with memory growth, else the CPU) | cpu | gpu | a GPU index; as runtime.device."


def user_errors(command):
    """Turn ImgclsError into one red line and exit code 2; Ctrl-C into exit code 130."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except ImgclsError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, markup=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper


@app.command()
@user_errors
def train(
    config: Optional[Path] = typer.Argument(None, help="Experiment config (YAML); with --resume: the run folder (default: runs/latest)."),
    set_: List[str] = typer.Option([], "--set", "-s", help=SET_HELP),
    name: Optional[str] = typer.Option(None, help="Run name (default: the config file's name)."),
    runs_dir: Path = typer.Option(Path("runs"), help=RUNS_DIR_HELP),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted or killed run from its last completed epoch."),
    force: bool = typer.Option(False, "--force", help="With --resume: continue even though --set or the data folder changed."),
):
    """Train a model; writes runs/<name>-<time>/ and points runs/latest at it. Ctrl-C exits 130, SIGTERM 143."""
    from imgcls.launch import exit_code, launch_training

    command = shlex.join(["imgcls", *sys.argv[1:]])
    result = launch_training(config, set_, runs_dir=runs_dir, name=name, resume=resume, force=force,
                             log=err.print, command=command)
    if result is None:  # --resume: the run had ended already
        return
    run, metrics = result
    best = metrics["best"]
    if metrics["best_epoch"] is not None:
        scores = ", ".join(f"{k} {v:.4f}" for k, v in best.items() if k.startswith("val_"))
        speed = f"{metrics['train_images_per_s']} training images/s; " if metrics["train_images_per_s"] else ""
        err.print(f"[bold]{metrics['status']}[/]: best epoch {metrics['best_epoch']} of {metrics['epochs_run']} "
                  f"({scores}); {speed}{metrics['wall_time_s']:.0f} s", markup=True)
    if run.exists():  # a multi-worker run's other workers train in a scratch folder, deleted by now
        err.print(f"run folder: {run}")
    raise typer.Exit(exit_code(metrics))


@app.command()
@user_errors
def predict(
    paths: List[Path] = typer.Argument(..., help="Images, or folders searched recursively."),
    run: Optional[Path] = typer.Option(None, help="Run folder (default: runs/latest)."),
    model: Optional[Path] = typer.Option(None, help="Instead of a run: a .keras file, a SavedModel folder or a .tflite file, "
                                                    "with labels.txt beside it (what `imgcls export` writes)."),
    runs_dir: Path = typer.Option(Path("runs"), help=RUNS_DIR_HELP),
    top_k: int = typer.Option(1, "--top-k", "-k", min=1, help="Show the K most likely labels."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of lines."),
    csv_file: Optional[Path] = typer.Option(None, "--csv", help="Also write the predictions to this CSV file."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
):
    """Predict the class of images with a trained run or an exported model."""
    from imgcls.infer.classifier import Classifier
    from imgcls.infer.predict import collect_images, predict_images
    from imgcls.run.layout import resolve_run
    from imgcls.runtime import import_tensorflow, parse_device

    if run is not None and model is not None:
        raise ImgclsError("give --run or --model, not both")
    chosen_device = parse_device(device)
    run_dir = None if model is not None else resolve_run(run, runs_dir)
    images = collect_images(paths, warn=lambda message: err.print(f"[yellow]warning:[/] {escape(message)}", markup=True))
    import_tensorflow(chosen_device)  # before any model: the GPUs are set up once per process
    source = Classifier.from_path(model) if model is not None else run_dir
    predictions = predict_images(source, images, top_k=top_k)
    if as_json:
        out.print_json(json.dumps([p.to_dict() for p in predictions], ensure_ascii=False))
    else:
        for p in predictions:
            others = "  ".join(f"{t['label']} {t['confidence']:.3f}" for t in p.top_k[1:])
            typer.echo(f"{p.path}\t{p.label}\t{p.confidence:.3f}" + (f"\t({others})" if others else ""))
    if csv_file:
        _write_predictions_csv(csv_file, predictions)
        err.print(f"wrote {csv_file}")


def _write_predictions_csv(path: Path, predictions) -> None:
    k = max(len(p.top_k) for p in predictions)
    header = ["path", "label", "confidence"] + [f"{what}_{i}" for i in range(2, k + 1) for what in ("label", "confidence")]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for p in predictions:
            writer.writerow([p.path, p.label, p.confidence] + [v for t in p.top_k[1:] for v in (t["label"], t["confidence"])])


@app.command()
@user_errors
def inspect(
    source: Path = typer.Argument(..., help="Experiment config (YAML), or a data folder with one sub-folder per class."),
    set_: List[str] = typer.Option([], "--set", "-s", help=SET_HELP),
    out_file: Optional[Path] = typer.Option(None, "--out", "-o", help="Sample grid PNG (default: <data folder name>_samples.png)."),
    as_json: bool = typer.Option(False, "--json", help="Print the facts as JSON instead of a report."),
):
    """Check a dataset: class counts per subset, bad files, duplicates, formats and sizes, cache estimate, sample grid."""
    from imgcls.config import load_config
    from imgcls.data.plan import plan_data
    from imgcls.data.report import data_facts, print_report, sample_grid

    cfg = load_config(raw={"data": {"dir": str(source)}}, overrides=set_) if source.is_dir() else load_config(source, set_)
    plan = plan_data(cfg)
    grid = out_file or Path(f"{Path(cfg.data.dir).resolve().name}_samples.png")
    if not as_json:
        print_report(plan, out.print, details=True)
    sample_grid(plan, cfg.data.image_size, cfg.channels, grid, seed=cfg.data.seed)
    if as_json:
        out.print_json(json.dumps({**data_facts(plan), "sample_grid": str(grid)}, ensure_ascii=False))
    else:
        out.print(f"sample grid: {grid}", highlight=False, markup=False)


@app.command()
@user_errors
def export(
    run: Optional[Path] = typer.Argument(None, help="Run folder (default: runs/latest)."),
    format_: str = typer.Option(..., "--format", "-f", help="savedmodel (TF Serving) | tflite (phones, Raspberry Pi) | keras."),
    quantize: str = typer.Option("none", "--quantize", "-q",
                                 help="tflite only: none (float32) | float16 | dynamic | int8 (full integer, calibrated on training images)."),
    out_dir: Optional[Path] = typer.Option(None, "--out", "-o", help="Export folder (default: RUN/export/<format>[-<quantize>])."),
    runs_dir: Path = typer.Option(Path("runs"), help=RUNS_DIR_HELP),
    device: str = typer.Option("auto", help=DEVICE_HELP),
):
    """Export a run's best model (float32 whatever it trained in) with its labels, checked against best.keras."""
    from imgcls.infer.export import check_request
    from imgcls.run.layout import resolve_run
    from imgcls.runtime import import_tensorflow, parse_device

    check_request(format_, quantize)
    chosen_device = parse_device(device)
    run_dir = resolve_run(run, runs_dir)

    from imgcls.infer.export import default_target, export_run

    import_tensorflow(chosen_device)
    target = out_dir or default_target(run_dir, format_, quantize)
    info = export_run(run_dir, format_, quantize, target, log=err.print)
    check = info["verification"]
    if "skipped" in check:
        err.print(f"[yellow]warning:[/] {escape(check['skipped'])}", markup=True)
    else:
        err.print(f"top-1 agreement with best.keras: {check['top1_agreement']:.1%} of {check['images']} {check['subset']} images; "
                  f"largest probability difference {check['max_probability_difference']:.2g}; "
                  f"accuracy {check['keras_accuracy']:.1%} (keras) vs {check['exported_accuracy']:.1%} (exported)", highlight=False)
        if check["top1_agreement"] < 1:
            changed = round((1 - check["top1_agreement"]) * check["images"])
            err.print(f"[yellow]note:[/] the export changed the top-1 class of {changed} of {check['images']} images", markup=True)
    size, source_size = info["size_bytes"], info["source_size_bytes"]
    ratio = ("the same size" if size == source_size else f"{source_size / size:.1f}x smaller" if size < source_size
             else f"{size / source_size:.1f}x larger")
    err.print(f"size: {_kilobytes(size)} ({target.name}) vs {_kilobytes(source_size)} (best.keras), {ratio}", highlight=False)
    out.print(str(target), highlight=False)


def _kilobytes(n: int) -> str:
    return f"{n / 1024:,.1f} KiB"


@app.command()
@user_errors
def plot(
    run_dirs: List[Path] = typer.Argument(None, help="Run folders (default: runs/latest); several are overlaid."),
    out_file: Optional[Path] = typer.Option(None, "--out", "-o", help="PNG to write (default: <first run>/history.png)."),
    runs_dir: Path = typer.Option(Path("runs"), help=RUNS_DIR_HELP),
):
    """Plot accuracy, loss and learning rate per epoch of one or more runs, best epoch marked."""
    from imgcls.plots import plot_history
    from imgcls.run.layout import HISTORY_PNG, read_history, resolve_run

    resolved = [resolve_run(r, runs_dir) for r in (run_dirs or [None])]
    for run in resolved:
        read_history(run)  # a run without history fails here with its name
    path = plot_history(resolved, out_file or resolved[0] / HISTORY_PNG)
    out.print(str(path), highlight=False)


class Split(str, Enum):
    val = "val"
    test = "test"


@app.command()
@user_errors
def evaluate(
    run: Optional[Path] = typer.Argument(None, help="Run folder (default: runs/latest)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Evaluate this folder (same class sub-folders as the run) instead of the run's split."),
    split: Optional[Split] = typer.Option(None, "--split", help="Subset of the run's split.csv to evaluate (default: val)."),
    as_json: bool = typer.Option(False, "--json", help="Print eval.json instead of the report."),
    runs_dir: Path = typer.Option(Path("runs"), help=RUNS_DIR_HELP),
    device: str = typer.Option("auto", help=DEVICE_HELP),
):
    """Accuracy, top-k, loss and per-class precision/recall/F1 of a run's best.keras; confusion matrix and mistakes as PNGs."""
    from imgcls.run.layout import resolve_run
    from imgcls.runtime import import_tensorflow, parse_device

    if data is not None and split is not None:
        raise ImgclsError("--split picks images of the run's split.csv; with --data DIR the whole folder is evaluated: give one of them")
    chosen_device = parse_device(device)
    run_dir = resolve_run(run, runs_dir)

    from imgcls.infer.evaluate import evaluate_run, report_table

    import_tensorflow(chosen_device)

    result = evaluate_run(run_dir, split=split.value if split else "val", data_dir=data)
    if as_json:
        out.print_json(json.dumps(result, ensure_ascii=False))
        return
    checkpoint = result["checkpoint"]
    source = f"{result['split']} split of {result['data']}" if result["split"] else result["data"]
    out.print(f"[bold]{escape(result['run'])}[/]: {checkpoint['file']} (epoch {checkpoint['epoch']}, best {checkpoint['monitor']}) "
              f"on the {escape(source)}: {result['images']} images, {len(result['classes'])} classes", highlight=False, markup=True)
    top = f"   top-{result['top_k']['k']} accuracy [bold]{result['top_k']['accuracy']:.4f}[/]" if result["top_k"] else ""
    out.print(f"accuracy [bold]{result['accuracy']:.4f}[/]{top}   loss [bold]{result['loss']:.4f}[/]", highlight=False, markup=True)
    out.print(report_table(result))
    out.print(f"wrote {', '.join(result['files'].values())} in {run_dir}", highlight=False)


@app.command("runs")
@user_errors
def runs_command(
    runs_dir: Path = typer.Option(Path("runs"), help=RUNS_DIR_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of the table."),
):
    """List runs: name, date, model, epochs, best val accuracy, wall time, status."""
    from imgcls.run.layout import list_runs
    from imgcls.run.status import describe_run

    described = [describe_run(run) for run in list_runs(runs_dir)]
    if as_json:
        out.print_json(json.dumps(described, ensure_ascii=False))
        return
    if not described:
        err.print(f"no runs in {runs_dir}/ (train one with: imgcls train configs/digits.yaml)")
        return
    from rich.table import Table
    from rich.text import Text

    table = Table(header_style="bold", show_edge=False)
    for column in ("run", "date", "model", "epochs", "best val acc", "wall time", "status"):
        table.add_column(column, justify="right" if column in ("epochs", "best val acc", "wall time") else "left",
                         no_wrap=column != "run")
    for r in described:
        accuracy = f"{r['best_val_accuracy']:.4f}" if r["best_val_accuracy"] is not None else "-"
        table.add_row(r["name"], r["date"], r["model"], f"{r['epochs_run']}/{r['epochs_planned']}", accuracy,
                      _duration(r["wall_time_s"]), Text(r["status"].replace("_", " "), style=_STATUS_STYLE.get(r["status"], "")))
    # Piped output has no terminal width to respect: never squeeze names into "digits-2…".
    (out if out.is_terminal else Console(width=200, markup=False)).print(table)


_STATUS_STYLE = {"finished": "green", "stopped_early": "green", "interrupted": "yellow", "failed": "red", "running": "cyan"}


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


@app.command()
@user_errors
def summary(
    config: Path = typer.Argument(..., help="Experiment config (YAML)."),
    num_classes: Optional[int] = typer.Option(None, min=1, help="Classes, when the data folder is not there."),
    set_: List[str] = typer.Option([], "--set", "-s", help=SET_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print {model, total_params, trainable_params} as JSON."),
):
    """Show a config's model: layers and parameter counts, without loading images."""
    from imgcls.config import load_config

    cfg = load_config(config, set_)
    n = num_classes or _count_class_folders(cfg.data.dir)
    if n is None:
        raise ImgclsError(f"data folder {cfg.data.dir} not found: pass --num-classes N to size the output layer")

    from imgcls.models import build_model
    from imgcls.runtime import setup_runtime

    setup_runtime(cfg.runtime)
    model = build_model(cfg, n)
    total = int(model.count_params())
    trainable = int(sum(int(w.numpy().size) for w in model.trainable_weights))
    if as_json:
        out.print_json(json.dumps({"model": cfg.model.name, "num_classes": n, "total_params": total, "trainable_params": trainable}))
    else:
        model.summary(print_fn=lambda line, **_: out.print(line, highlight=False, markup=False))
        out.print(f"{cfg.model.name}: {n} classes, {total:,} parameters ({trainable:,} trainable)", highlight=False)


def _count_class_folders(data_dir: Path) -> int | None:
    if not Path(data_dir).is_dir():
        return None
    return sum(1 for p in Path(data_dir).iterdir() if p.is_dir() and not p.name.startswith(".")) or None


@app.command("config")
@user_errors
def config_command(
    config: Optional[Path] = typer.Argument(None, help="Config to validate and print fully resolved."),
    set_: List[str] = typer.Option([], "--set", "-s", help=SET_HELP),
    defaults: bool = typer.Option(False, "--defaults", help="Print the commented reference config: every key, default and meaning."),
):
    """Validate a config and print it resolved, or print the reference config."""
    import yaml

    from imgcls.config import load_config
    from imgcls.config.reference import render_defaults

    if defaults or config is None:
        out.print(render_defaults(), highlight=False, markup=False, end="")
        return
    resolved = load_config(config, set_).to_dict()
    out.print(yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True), highlight=False, markup=False, end="")


@app.command()
def models():
    """List the registered models and their options."""
    from imgcls.models.registry import MODELS

    for name in sorted(MODELS):
        entry = MODELS[name]
        out.print(f"[bold]{name}[/]: {escape(entry.description)}", markup=True)
        options = ", ".join(f"{k}={f.default!r}" for k, f in entry.options.model_fields.items())
        out.print(f"    {options}", highlight=False, markup=False)


def main() -> None:
    app(prog_name="imgcls")


if __name__ == "__main__":
    main()
