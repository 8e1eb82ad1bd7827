"""Evaluate: how good a run's best.keras is, class by class, and where it goes wrong.

    evaluate_run(run)                      the run's own validation images (split.csv)
    evaluate_run(run, split="test")        its held-out test images, when it has them
    evaluate_run(run, data_dir="holdout")  any folder with the run's class folders

The images are the ones training recorded in split.csv, so the numbers are
reproducible: nothing is re-split. They go through the one batched
prediction path (`imgcls.infer.predict.class_probabilities`: the same `load_image`
preprocessing as training, one pass, nothing cached), and the loss is the
run's own Keras loss, so the accuracy equals the val_accuracy that
history.csv recorded for the checkpointed epoch (for a run trained in
float32; see `imgcls.models.inference_model`).

The figures come from `imgcls.infer.metrics.classification_report` (plain
NumPy); everything printed or drawn comes from it.
"""

from __future__ import annotations

import re
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from imgcls.run import layout
from imgcls.run.status import best_epoch
from imgcls.errors import ImgclsError
from imgcls.infer.metrics import (
    classification_report, default_top_k, most_confident_mistakes, normalize_rows,
)
from imgcls.files import write_json

# --------------------------------------------------------------------------- which images


ARTIFACTS = {"eval": layout.EVAL, "confusion_matrix": layout.CONFUSION_PNG,
             "confusion_matrix_normalized": layout.CONFUSION_NORMALIZED_PNG, "misclassified": layout.MISCLASSIFIED_PNG,
             "misclassified_cam": layout.MISCLASSIFIED_CAM_PNG}


def artifact_name(name: str, tag: str) -> str:
    """eval.json -> eval_test.json: one set of files per evaluated split or folder."""
    stem, dot, ext = name.rpartition(".")
    return f"{stem}{tag}{dot}{ext}"


def _split_images(run: Path, split: str, class_names: list[str]) -> tuple[Path, list[str], list[str], np.ndarray]:
    """The files, what TensorFlow reads for each, and labels of one subset of the run's split.csv.

    The files are checked in their data folder's scan cache, which training filled: no image is decoded twice.
    """
    from imgcls.data.scan import scan_files

    rows = layout.subset_images(run, split)
    if not rows:
        if split == "test":
            raise ImgclsError(f"{run}: split.csv has no test images (the run was trained without a test split); "
                              "evaluate --split val, or another folder with --data DIR")
        raise ImgclsError(f"{run}: split.csv has no {split} images")
    root = layout.subset_root(run, split)
    index = {name: i for i, name in enumerate(class_names)}
    unknown = sorted({name for _, name in rows} - set(index))
    if unknown:
        raise ImgclsError(f"{run}/split.csv: classes {unknown} are not in classes.json; the run folder is inconsistent")
    files = [str(path) for path, _ in rows]
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        raise ImgclsError(f"{len(missing)} of the {len(files)} {split} images in split.csv are missing "
                          f"(first: {missing[0]}); restore the data folder, or evaluate another folder with --data DIR")
    scanned, _ = scan_files(files, root)
    bad = [found for found in scanned if not found.is_image]
    if bad:
        raise ImgclsError(f"{bad[0].path}: {bad[0].problem} (one of {len(bad)} unusable {split} images in split.csv); "
                          "restore it, or evaluate another folder with --data DIR")
    labels = np.asarray([index[name] for _, name in rows], dtype=np.int64)
    return root, files, [found.readable for found in scanned], labels


def _folder_images(run: Path, data: Any, data_dir: Path, class_names: list[str]) -> tuple[Path, list[str], list[str], np.ndarray]:
    """The usable images of a folder labelled the way the run's data was (class folders, file names or its CSV
    file: the absolute path training recorded), with the run's classes (bad files are skipped)."""
    from imgcls.data.folders import scan_folder
    from imgcls.data.labels import LabelSource
    from imgcls.data.trio import find_trio

    source = LabelSource.of(data)
    recorded = (layout.read_config(run).get("imgcls") or {}).get("labels_file")
    if source.labels_file is not None and recorded and not Path(source.labels_file).is_file():
        source.labels_file = Path(recorded)
    trio = find_trio(Path(data_dir), source)
    if trio is not None:
        names = ", ".join(f"{folder.name}/" for folder in trio.folders.values())
        raise ImgclsError(f"--data {data_dir}: it is split into {names}; evaluate one of them, e.g. --data "
                          f"{next(iter(trio.folders.values()))}")
    scan = scan_folder(Path(data_dir), class_names, key="--data", source=source)
    if not scan.files:
        raise ImgclsError(f"--data {data_dir}: no usable labelled images ({len(scan.bad)} bad or unlabelled); "
                          "give a folder labelled as the run's training data was")
    return Path(data_dir), scan.files, scan.readable, scan.labels


# --------------------------------------------------------------------------- evaluating a run


def evaluate_run(run: Path, split: str = "val", data_dir: Path | None = None, out: Path | None = None) -> dict[str, Any]:
    """Evaluate the run's best.keras; write eval.json and the plots into `out` (default: the run); return eval.json's content."""
    evaluation = compute_evaluation(run, split, data_dir)
    write_evaluation(evaluation, out)
    return evaluation.result


@dataclass
class Evaluation:
    result: dict[str, Any]  # what eval.json holds
    run: Path
    worst_images: list  # the pixels of result["misclassified"], for misclassified.png
    worst_heatmaps: list = field(default_factory=list)  # their Grad-CAM of the predicted class, for misclassified_cam.png


def compute_evaluation(run: Path, split: str = "val", data_dir: Path | None = None, tta: bool = False) -> Evaluation:
    """Every figure of `imgcls evaluate`, computed; nothing written yet (`write_evaluation` does that).

    `tta`: outputs averaged over each image and its mirror images; the files get a `_tta` suffix.
    """
    if data_dir is None and split not in ("train", "val", "test"):
        raise ImgclsError(f"split: {split!r} is not a subset of split.csv; give val, test or train")
    from imgcls.config import load_config
    from imgcls.data.pipeline import encode_labels, image_batches
    from imgcls.infer.classifier import Classifier
    from imgcls.infer.predict import as_class_probabilities, class_probabilities, tta_flips
    from imgcls.models import build_loss

    run = layout.resolve_run(run)
    config = load_config(run / layout.CONFIG)
    class_names = layout.read_classes(run)
    if data_dir is not None:
        root, files, readable, labels = _folder_images(run, config.data, data_dir, class_names)
        tag = "_data-" + (re.sub(r"[^A-Za-z0-9._-]+", "_", Path(data_dir).resolve().name) or "folder")
    else:
        root, files, readable, labels = _split_images(run, split, class_names)
        tag = "" if split == "val" else f"_{split}"
    flips = tta_flips(run) if tta else ()
    tag += "_tta" if tta else ""
    classifier = Classifier.from_run(run)
    outputs = class_probabilities(classifier, readable, flips=flips)  # one pass, nothing cached
    targets = encode_labels(labels, config.data.label_mode, len(class_names))
    probs = as_class_probabilities(outputs)

    report = classification_report(labels, probs, class_names, default_top_k(len(class_names), config.evaluate.top_k))
    result = {"run": run.name, "split": None if data_dir is not None else split, "data": str(Path(root).resolve()),
              "tta": [{1: "vertical", 2: "horizontal"}[axis] + " flip" for axis in flips],
              "checkpoint": _checkpoint(run, config), "images": report.pop("images"), "accuracy": report.pop("accuracy"),
              "top_k": report.pop("top_k"),
              # The training loss itself (label smoothing included), so it compares with val_loss.
              "loss": float(np.asarray(build_loss(config)(targets, outputs))), **report}
    worst = most_confident_mistakes(labels, probs, config.evaluate.misclassified)
    result["misclassified"] = [{"path": files[i], "true": class_names[labels[i]],
                                "predicted": class_names[int(probs[i].argmax())], "confidence": float(probs[i].max())}
                               for i in worst]
    result["files"] = {key: artifact_name(base, tag) for key, base in ARTIFACTS.items()}
    batches = list(image_batches([readable[i] for i in worst], classifier.image_size, classifier.channels))
    images = np.concatenate(batches) if batches else np.zeros((0, *classifier.image_size, classifier.channels), np.uint8)
    return Evaluation(result, run, list(images), _heatmaps(classifier, images))


def _heatmaps(classifier, images: np.ndarray) -> list[np.ndarray]:
    """Grad-CAM of each mistake's predicted class: what the model saw there."""
    from imgcls.infer.explain import GradCam

    if not len(images):
        return []
    try:
        cam = GradCam(classifier.model)
    except ImgclsError:  # a model without a feature map: misclassified_cam.png says so instead
        return []
    return list(cam(images)[1])


def write_evaluation(evaluation: Evaluation, out: Path | None = None) -> Path:
    """eval.json and the three PNGs, into `out` (default: the run folder); a folder that cannot be written is one line."""
    folder = Path(out) if out is not None else evaluation.run
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _draw(folder, evaluation.result, evaluation.worst_images, evaluation.worst_heatmaps)
        write_json(folder / evaluation.result["files"]["eval"], evaluation.result)
    except OSError as exc:
        raise ImgclsError(f"{exc.filename or folder}: cannot write the evaluation report there ({exc.strerror or exc}); "
                          "give --out DIR to write it elsewhere") from None
    return folder


def _checkpoint(run: Path, config) -> dict[str, Any]:
    """Which epoch best.keras holds, and what training measured for it."""
    best = best_epoch(run) or {}
    return {"file": layout.MODEL, "epoch": int(best["epoch"]) if "epoch" in best else None,
            "monitor": config.callbacks.checkpoint.monitor,
            "val_accuracy": best.get("val_accuracy"), "val_loss": best.get("val_loss")}


def _draw(run: Path, result: dict[str, Any], worst_images: list[np.ndarray], heatmaps: list[np.ndarray]) -> None:
    """The confusion matrices (counts and row-normalized) and the grid of the worst mistakes, plain and with Grad-CAM."""
    from imgcls.plots import plot_confusion_matrix, plot_misclassified, plot_mistakes_with_cam

    files = result["files"]
    matrix = np.asarray(result["confusion_matrix"])
    where = f"{result['run']}, " + (f"{result['split']} split" if result["split"] else f"folder {Path(result['data']).name}")
    about = f"{where}: {result['images']} images, accuracy {result['accuracy']:.4f}"
    plot_confusion_matrix(matrix, result["classes"], run / files["confusion_matrix"], title=f"Confusion matrix (counts)\n{about}")
    plot_confusion_matrix(normalize_rows(matrix), result["classes"], run / files["confusion_matrix_normalized"],
                          normalized=True, title=f"Confusion matrix, rows normalized (recall on the diagonal)\n{about}")
    wrong = result["images"] - int(np.trace(matrix))
    plot_misclassified(worst_images, result["misclassified"], run / files["misclassified"],
                       title=f"Most confident mistakes: {len(worst_images)} of {wrong} wrong\n{about}")
    plot_mistakes_with_cam(worst_images if heatmaps else [], heatmaps, result["misclassified"],
                           run / files["misclassified_cam"], about=f"{len(worst_images)} of {wrong} wrong\n{about}")


# --------------------------------------------------------------------------- reporting


def summary_line(result: dict[str, Any]) -> str:
    """One line for training's log."""
    top = f", top-{result['top_k']['k']} {result['top_k']['accuracy']:.4f}" if result["top_k"] else ""
    where = result["split"] or result["data"]
    return (f"evaluation on {where} ({result['images']} images): accuracy {result['accuracy']:.4f}{top}, "
            f"loss {result['loss']:.4f}, macro F1 {result['macro_avg']['f1']:.4f}; wrote {result['files']['eval']} and plots")


def evaluation_report(result: dict[str, Any]) -> list:
    """What `imgcls evaluate` prints: what was evaluated, the headline figures, the per-class table."""
    from rich.text import Text

    checkpoint = result["checkpoint"]
    source = f"the {result['split']} split of {result['data']}" if result["split"] else f"the images of {result['data']}"
    heading = Text.assemble((result["run"], "bold"), f": {checkpoint['file']} (epoch {checkpoint['epoch']}, best "
                            f"{checkpoint['monitor']}) on {source}: {result['images']} images, {len(result['classes'])} classes"
                            + (f"; test-time augmentation: each image and its {' and '.join(result['tta'])}"
                               if result.get("tta") else ""))
    figures = Text.assemble("accuracy ", (f"{result['accuracy']:.4f}", "bold"))
    if result["top_k"]:
        figures.append_text(Text.assemble(f"   top-{result['top_k']['k']} accuracy ", (f"{result['top_k']['accuracy']:.4f}", "bold")))
    figures.append_text(Text.assemble("   loss ", (f"{result['loss']:.4f}", "bold")))
    return [heading, figures, report_table(result)]


def report_table(result: dict[str, Any]):
    """The per-class precision / recall / F1 / support table, with macro and weighted averages."""
    from rich.table import Table

    table = Table(show_edge=False, header_style="bold")
    table.add_column("class", overflow="fold")
    for column in ("precision", "recall", "f1", "support"):
        table.add_column(column, justify="right")
    for row in result["per_class"]:
        table.add_row(row["class"], *_scores(row))
    table.add_section()
    table.add_row("macro avg", *_scores(result["macro_avg"]), style="italic")
    table.add_row("weighted avg", *_scores(result["weighted_avg"]), style="italic")
    return table


def _scores(row: dict[str, Any]) -> list[str]:
    return [f"{row['precision']:.4f}", f"{row['recall']:.4f}", f"{row['f1']:.4f}", str(row["support"])]


def evaluate_after_training(config, run: Path, status: str, log: Callable[[str], None]) -> None:
    """Training's last step: evaluate best.keras on val (and test) so every run folder has the report.

    Skipped after Ctrl-C (the user wants out). Training's own artifacts are
    already written, so an evaluation problem is reported, not raised.
    """
    if not config.evaluate.after_training or not (Path(run) / layout.MODEL).is_file():
        return
    if status == "interrupted":
        log(f"evaluation skipped; run it with: imgcls evaluate {run}")
        return
    subsets = {row["subset"] for row in layout.read_split(run)}
    for split in [s for s in ("val", "test") if s in subsets]:
        try:
            log(summary_line(evaluate_run(run, split=split)))
        except ImgclsError as exc:
            log(f"evaluation on {split} failed: {exc}")
