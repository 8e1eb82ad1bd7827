"""The `imgcls` command line.

Every command is a thin layer over a module: it parses arguments, calls one
function and prints the result. TensorFlow is imported inside the commands
that need it, so `imgcls --help`, `imgcls config` and argument errors answer
at once. A user error (`ImgclsError`) is printed as one line with exit code 2.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import sys
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape

from imgcls.errors import ImgclsError, first_line

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
TTA_HELP = "Test-time augmentation: average the outputs over each image and its mirror images (the flips of the run's data.augment_flip; a horizontal flip for --model)."
DEVICE_HELP = "auto (every GPU, with memory growth, else the CPU) | cpu | gpu | a GPU index; as runtime.device."


def user_errors(command):
    """Turn ImgclsError into one red line and exit code 2; Ctrl-C into exit code 130.

    An OSError that reaches here (a file that cannot be written or read: a
    full disk, a read-only folder) is a user's problem too: one line naming
    the file.
    """

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except ImgclsError as exc:
            _error(str(exc))
        except BrokenPipeError:  # `imgcls predict DIR | head`: the reader has what it wanted; not an error to print
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's last flush does not fail again
            raise typer.Exit(141) from None  # 128 + SIGPIPE, as a shell reports a closed pipe
        except OSError as exc:
            _error(f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else first_line(exc))
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper


def _error(message: str):
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True)
    raise typer.Exit(2)


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


class CsvFormat(str, Enum):
    predictions = "predictions"
    kaggle = "kaggle"


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
    csv_format: CsvFormat = typer.Option(CsvFormat.predictions, "--format", help="What --csv holds: predictions (path, "
                                         "label, confidence, top-k) | kaggle (a submission: id, label; ids are file "
                                         "names without the extension)."),
    id_column: Optional[str] = typer.Option(None, help="--format kaggle: the id column's name (default: id, or the "
                                                       "template's first column)."),
    label_column: Optional[str] = typer.Option(None, help="--format kaggle: the label column's name (default: label, "
                                                          "or the template's second column)."),
    template: Optional[Path] = typer.Option(None, help="A sample submission CSV: its columns and row order are kept, "
                                                       "its ids matched to the images (implies --format kaggle)."),
    tta: bool = typer.Option(False, "--tta", help=TTA_HELP),
    device: str = typer.Option("auto", help=DEVICE_HELP),
):
    """Predict the class of images with a trained run or an exported model (or write a competition's submission)."""
    from imgcls.infer.classifier import Classifier
    from imgcls.files import check_writable
    from imgcls.infer.predict import collect_images, predict_images, write_predictions_csv
    from imgcls.infer.submission import Template, write_submission
    from imgcls.run.layout import resolve_run
    from imgcls.runtime import parse_device

    if run is not None and model is not None:
        raise ImgclsError("give --run or --model, not both")
    kaggle = csv_format == CsvFormat.kaggle or template is not None
    if kaggle and csv_file is None:
        raise ImgclsError("a submission is written to --csv FILE: add --csv submission.csv")
    if not kaggle and (id_column or label_column):
        raise ImgclsError("--id-column and --label-column name a submission's columns: add --format kaggle")
    if template is not None and csv_file is not None and csv_file.resolve() == template.resolve():
        raise ImgclsError(f"--csv {csv_file} is the --template: write the submission to another file")
    chosen_device = parse_device(device)
    if csv_file:
        check_writable(csv_file, "--csv")
    run_dir = None if model is not None else resolve_run(run, runs_dir)
    skipped = []
    images = collect_images(paths, warn=lambda message: skipped.append(message) or err.print(
        f"[yellow]warning:[/] {escape(message)}", markup=True))
    if kaggle and skipped:
        raise ImgclsError(f"a submission needs every image, and {len(skipped)} could not be read ({skipped[0]}); "
                          "replace them (a blank image of the same name gets a guess), then predict again")
    _set_up_tensorflow_unless_lite(model, chosen_device)
    classifier = Classifier.from_path(model) if model is not None else Classifier.from_run(run_dir)
    sample = template and Template.read(template, classifier.class_names, id_column, label_column)
    if sample and sample.probability_columns:
        top_k = max(top_k, len(classifier.class_names))  # every class's probability
    predictions = predict_images(classifier, images, top_k=top_k, tta=tta, run=run_dir)
    if as_json:
        out.print_json(json.dumps([p.to_dict() for p in predictions], ensure_ascii=False))
    elif not kaggle:
        for p in predictions:
            typer.echo(p.line())
    if kaggle:
        rows = write_submission(csv_file, predictions, sample or None, id_column, label_column)
        err.print(f"wrote {csv_file}: a submission of {rows} rows")
    elif csv_file:
        write_predictions_csv(csv_file, predictions)
        err.print(f"wrote {csv_file}")


@app.command()
@user_errors
def inspect(
    source: Path = typer.Argument(..., help="Experiment config (YAML), or a data folder (one sub-folder per class, or "
                                              "train/ val/ test/ folders of them)."),
    set_: List[str] = typer.Option([], "--set", "-s", help=SET_HELP),
    out_file: Optional[Path] = typer.Option(None, "--out", "-o", help="Sample grid PNG (default: <data folder name>_samples.png)."),
    as_json: bool = typer.Option(False, "--json", help="Print the facts as JSON instead of a report."),
):
    """Check a dataset: class counts per subset, bad files, duplicates, formats and sizes, cache estimate, sample grid."""
    from imgcls.config import load_config
    from imgcls.data.plan import plan_data
    from imgcls.data.report import data_facts, print_report, sample_grid
    from imgcls.files import check_writable

    cfg = load_config(raw={"data": {"dir": str(source)}}, overrides=set_) if source.is_dir() else load_config(source, set_)
    plan = plan_data(cfg)
    grid = out_file or Path(f"{plan.data_dir.resolve().name}_samples.png")
    check_writable(grid, "--out")
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

    from imgcls.files import check_writable
    from imgcls.infer.export import default_target, export_report, export_run

    target = out_dir or default_target(run_dir, format_, quantize)
    check_writable(target, "--out" if out_dir else "the export folder (choose another with --out)", folder=True)
    import_tensorflow(chosen_device)
    info = export_run(run_dir, format_, quantize, target, log=err.print)
    for line in export_report(info, target):
        err.print(line, highlight=False)
    out.print(str(target), highlight=False)


@app.command()
@user_errors
def plot(
    run_dirs: List[Path] = typer.Argument(None, help="Run folders (default: runs/latest); several are overlaid."),
    out_file: Optional[Path] = typer.Option(None, "--out", "-o", help="PNG to write (default: <run>/history.png; several runs: <first run>/compare-with-<others>.png)."),
    runs_dir: Path = typer.Option(Path("runs"), help=RUNS_DIR_HELP),
):
    """Plot accuracy, loss and learning rate per epoch of one or more runs, best epoch marked."""
    from imgcls.files import check_writable
    from imgcls.plots import plot_history
    from imgcls.run.layout import plot_path, read_history, resolve_run

    resolved = [resolve_run(r, runs_dir) for r in (run_dirs or [None])]
    for run in resolved:
        read_history(run)  # a run without history fails here with its name
    target = out_file or plot_path(resolved)
    check_writable(target, "--out" if out_file else "the plot (choose another file with --out)")
    path = plot_history(resolved, target)
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
    out_dir: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for eval.json and the PNGs (default: the run folder)."),
    runs_dir: Path = typer.Option(Path("runs"), help=RUNS_DIR_HELP),
    tta: bool = typer.Option(False, "--tta", help=TTA_HELP + " Its files get a _tta suffix."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
):
    """Accuracy, top-k, loss and per-class precision/recall/F1 of a run's best.keras; confusion matrix and mistakes as PNGs."""
    from imgcls.files import check_writable
    from imgcls.run.layout import resolve_run
    from imgcls.runtime import import_tensorflow, parse_device

    if data is not None and split is not None:
        raise ImgclsError("--split picks images of the run's split.csv; with --data DIR the whole folder is evaluated: give one of them")
    chosen_device = parse_device(device)
    run_dir = resolve_run(run, runs_dir)

    from imgcls.infer.evaluate import compute_evaluation, evaluation_report, write_evaluation

    if out_dir is not None:
        check_writable(out_dir, "--out", folder=True)
    import_tensorflow(chosen_device)
    evaluation = compute_evaluation(run_dir, split=split.value if split else "val", data_dir=data, tta=tta)
    # The report is shown before its files are written: a run folder that cannot be written loses nothing.
    if as_json:
        out.print_json(json.dumps(evaluation.result, ensure_ascii=False))
    else:
        for renderable in evaluation_report(evaluation.result):
            out.print(renderable, highlight=False)
    folder = write_evaluation(evaluation, out_dir)
    if not as_json:
        out.print(f"wrote {', '.join(evaluation.result['files'].values())} in {folder}", highlight=False)


@app.command()
@user_errors
def explain(
    paths: List[Path] = typer.Argument(..., help="Images, or folders searched recursively."),
    run: Optional[Path] = typer.Option(None, help="Run folder (default: runs/latest)."),
    model: Optional[Path] = typer.Option(None, help="Instead of a run: a .keras file with labels.txt beside it."),
    class_name: Optional[str] = typer.Option(None, "--class", help="Explain this class (default: each image's predicted one)."),
    layer: Optional[str] = typer.Option(None, help="The feature map to explain from (default: the last convolutional one)."),
    out_dir: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for the PNGs (default: <run>/explain/)."),
    alpha: float = typer.Option(0.4, min=0.0, max=1.0, help="The heatmap's weight in the overlay."),
    as_json: bool = typer.Option(False, "--json", help="Print per image the label, confidence, heatmap peak and mass."),
    runs_dir: Path = typer.Option(Path("runs"), help=RUNS_DIR_HELP),
    device: str = typer.Option("auto", help=DEVICE_HELP),
):
    """Where the model looks: Grad-CAM heatmaps over images (original | heatmap | overlay, one PNG each)."""
    from imgcls.files import check_writable
    from imgcls.run.layout import resolve_run
    from imgcls.runtime import import_tensorflow, parse_device

    if run is not None and model is not None:
        raise ImgclsError("give --run or --model, not both")
    chosen_device = parse_device(device)
    source = model if model is not None else resolve_run(run, runs_dir)
    folder = out_dir or (source.parent if model is not None else source) / "explain"
    check_writable(folder, "--out", folder=True)
    import_tensorflow(chosen_device)
    from imgcls.infer.explain import explain_files

    results = explain_files(source, paths, folder, class_name=class_name, layer=layer, alpha=alpha,
                            warn=lambda message: err.print(f"[yellow]warning:[/] {escape(message)}", markup=True))
    if as_json:
        out.print_json(json.dumps(results, ensure_ascii=False))
    else:
        for row in results:
            typer.echo(f"{row['png']}\t{row['path']}\t{row['label']}\t{row['confidence']:.3f}")


@app.command("runs")
@user_errors
def runs_command(
    runs_dir: Path = typer.Option(Path("runs"), help=RUNS_DIR_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of the table."),
):
    """List runs: name, date, model, epochs, best val accuracy, wall time, status."""
    from imgcls.run.status import describe_runs, runs_table

    described = describe_runs(runs_dir)
    if as_json:
        out.print_json(json.dumps(described, ensure_ascii=False))
        return
    if not described:
        err.print(f"no runs in {runs_dir}/ (train one with: imgcls train configs/digits.yaml)")
        return
    # Piped output has no terminal width to respect: never squeeze names into "digits-2…".
    (out if out.is_terminal else Console(width=200, markup=False)).print(runs_table(described))


@app.command()
@user_errors
def summary(
    config: Path = typer.Argument(..., help="Experiment config (YAML)."),
    num_classes: Optional[int] = typer.Option(None, min=1, help="Classes, when the data folder is not there."),
    set_: List[str] = typer.Option([], "--set", "-s", help=SET_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print {model, total_params, trainable_params} as JSON."),
    diagram: Optional[Path] = typer.Option(None, help="Also draw the architecture, one block per stage, for a paper "
                                                      "or slides: .png, .svg or .pdf."),
):
    """Show a config's model: layers and parameter counts, without loading images."""
    from imgcls.config import load_config
    from imgcls.data.plan import count_classes
    from imgcls.files import check_writable
    from imgcls.plots import FIGURE_FORMATS

    if diagram is not None:
        if diagram.suffix.lower().lstrip(".") not in FIGURE_FORMATS:
            raise ImgclsError(f"--diagram {diagram}: give a .png, .svg or .pdf file")
        check_writable(diagram, "--diagram")
    cfg = load_config(config, set_)
    n = num_classes or count_classes(cfg)
    if not n:
        where = f"data folder {cfg.data.dir} not found" if cfg.data.dir else f"data.tfds {cfg.data.tfds} is not downloaded yet"
        raise ImgclsError(f"{where}: pass --num-classes N to size the output layer")

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
    if diagram is not None:
        from imgcls.models.architecture import draw_architecture

        draw_architecture(model, diagram)
        err.print(f"wrote {diagram}")


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


@app.command()
@user_errors
def serve(
    run: Optional[Path] = typer.Argument(None, help="Run folder (default: runs/latest)."),
    model: Optional[Path] = typer.Option(None, help="Instead of a run: a .keras file, a SavedModel folder, a .tflite file "
                                                    "or an export folder, with labels.txt beside it."),
    runs_dir: Path = typer.Option(Path("runs"), help=RUNS_DIR_HELP),
    host: str = typer.Option("127.0.0.1", help="Address to listen on. The default is this machine only; 0.0.0.0 "
                                               "lets other machines in (there is no authentication)."),
    port: int = typer.Option(8000, min=0, max=65535, help="Port (0: any free one, printed at start)."),
    max_batch: int = typer.Option(32, min=1, max=1024, help="Most images predicted together."),
    max_wait_ms: float = typer.Option(5.0, min=0, max=1000, help="Longest wait for more requests to batch with the first."),
    max_upload_mb: float = typer.Option(50, min=0.001, help="Largest request body, in MB (larger: 413)."),
    name: Optional[str] = typer.Option(None, help="The model's name in /v1/models/<name>:predict (default: the run's "
                                                  "or the export folder's name)."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
):
    """Serve a run or an exported model over HTTP: a page to try it at /, POST /predict, TF Serving's REST API."""
    from imgcls.run.layout import resolve_run
    from imgcls.runtime import parse_device
    from imgcls.serve import check_installed

    check_installed()
    if run is not None and model is not None:
        raise ImgclsError("give a run or --model, not both")
    chosen_device = parse_device(device)
    run_dir = None if model is not None else resolve_run(run, runs_dir)
    from imgcls.serve.server import bind, serve as serve_app

    sock = bind(host, port)  # before the model: a port in use is said at once
    try:
        _set_up_tensorflow_unless_lite(model, chosen_device)
        from imgcls.serve.app import create_app
        from imgcls.serve.model import open_model

        served = open_model(run_dir, model, name)
        served.warm_up(max_batch)

        app_ = create_app(served, max_batch=max_batch, max_wait_ms=max_wait_ms, max_upload_mb=max_upload_mb)
        serve_app(app_, sock, announce=lambda: _announce(served, sock, host))
    finally:
        sock.close()
    err.print("stopped")


def _announce(served, sock, host: str) -> None:
    bound_host, bound_port = sock.getsockname()[:2]
    bound_host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(bound_host, bound_host)  # every address: show one that works
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    c = served.classifier
    err.print(f"serving {served.name} ({c.kind}, {len(c.class_names)} classes, {c.image_size[0]}x{c.image_size[1]}"
              f"x{c.channels}) at http://{shown}:{bound_port}/ (warmed up in {served.warmup_seconds:.1f} s; "
              "Ctrl-C to stop)")
    from imgcls.serve.server import is_loopback

    if not is_loopback(host):
        err.print(f"[yellow]note:[/] listening on {escape(host)}, not only this machine: other machines can reach "
                  "this server, and it has no authentication (you chose --host)", markup=True)


def _set_up_tensorflow_unless_lite(model: Optional[Path], device) -> None:
    """TensorFlow with its GPUs set up, before any model (once per process), unless `--model` is a .tflite that
    LiteRT runs: then TensorFlow is never imported (predict, serve)."""
    from imgcls.infer.classifier import model_needs_tensorflow
    from imgcls.runtime import import_tensorflow

    if model is None or model_needs_tensorflow(model):
        import_tensorflow(device)


def main() -> None:
    import signal

    try:
        app(prog_name="imgcls")
    finally:
        # Exiting: a Ctrl-C now would only print a traceback from the interpreter's shutdown (TensorFlow's threads).
        signal.signal(signal.SIGINT, signal.SIG_IGN)


if __name__ == "__main__":
    main()
