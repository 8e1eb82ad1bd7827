"""Export: a run's best model for serving (SavedModel), devices (TFLite) or Keras, checked before it is kept.

    imgcls export runs/latest --format tflite --quantize int8

    RUN/export/<format>[-<quantize>]/
        saved_model.pb, variables/   savedmodel: signatures serving_default (float32 images),
                                     serving_uint8 (uint8 images), serving_bytes (encoded JPEG/PNG)
        model.tflite                 tflite: float32, or float16, dynamic-range or int8 quantized
        model.keras                  keras: the best checkpoint (float32, no optimizer state)
        labels.txt                   class names, one a line, in output order
        export.json                  input, preprocessing, classes, source run, versions, sizes, verification

Every exported model takes raw 0-255 pixels of the training size (the model
rescales them itself) and returns class probabilities. It computes in
float32, whatever precision the run trained in (best.keras is saved that
way, see `imgcls.models.inference_model`), unless --quantize asks for
smaller. int8 is calibrated on up to REPRESENTATIVE_IMAGES training images
from the run's split.csv and takes and returns uint8.

The folder is built beside the target under a temporary name. The written
model is loaded back the way `imgcls predict --model` loads it and compared
with the Keras model on validation images; only then is the folder renamed
into place, so a failure never leaves half an export behind.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Callable

import numpy as np

import imgcls
from imgcls.run import layout
from imgcls.infer.classifier import EXPORT_INFO, LABELS, Classifier
from imgcls.errors import ImgclsError, did_you_mean, first_line
from imgcls.files import atomic_folder, write_json, write_text
from imgcls.runtime import import_tensorflow, quiet_native_stderr

FORMATS = ("savedmodel", "tflite", "keras")
QUANTIZATIONS = ("none", "float16", "dynamic", "int8")
REPRESENTATIVE_IMAGES = 300  # int8 calibration: a few hundred images cover the activation ranges
VERIFY_IMAGES = 200
MIN_AGREEMENT = 0.99  # top-1 agreement with best.keras that every export but int8 must reach
MIN_INT8_AGREEMENT = 0.9  # int8 may change a few close answers, never many: a broken calibration is refused
COMPUTES = {"none": "float32", "float16": "float32 (weights stored as float16)",
            "dynamic": "float32 activations, int8 weights", "int8": "int8"}


def check_request(fmt: str, quantize: str) -> None:
    """Reject an unknown format or quantization before any TensorFlow is imported."""
    if fmt not in FORMATS:
        raise ImgclsError(f"--format {fmt}: unknown format{_did_you_mean(fmt, FORMATS)}; "
                          "use savedmodel (TF Serving), tflite (phones, Raspberry Pi) or keras")
    if quantize not in QUANTIZATIONS:
        raise ImgclsError(f"--quantize {quantize}: unknown quantization{_did_you_mean(quantize, QUANTIZATIONS)}; "
                          "use none, float16, dynamic or int8")
    if quantize != "none" and fmt != "tflite":
        raise ImgclsError(f"--quantize {quantize} applies to --format tflite only; drop it, or export tflite")


def _did_you_mean(word: str, choices) -> str:
    hint = did_you_mean(word, choices)
    return f" ({hint})" if hint else ""


def default_target(run: Path, fmt: str, quantize: str) -> Path:
    return Path(run) / layout.EXPORT / (fmt if quantize == "none" else f"{fmt}-{quantize}")


def export_run(run: Path, fmt: str, quantize: str = "none", out: Path | None = None,
               log: Callable[[str], None] = print) -> dict:
    """Export the run's best.keras into `out` (default RUN/export/<format>[-<quantize>]); return export.json."""
    check_request(fmt, quantize)
    run = Path(run)
    target = Path(out) if out is not None else default_target(run, fmt, quantize)
    if target.exists() and not (target / EXPORT_INFO).is_file():
        raise ImgclsError(f"{target} exists and is not an imgcls export folder; choose another --out")
    source = Classifier.from_run(run)
    representative = _calibration_images(run, source) if quantize == "int8" else None

    # Built beside the target and renamed into place only once checked: a failure (Ctrl-C included) leaves nothing.
    with atomic_folder(target) as building:
        model_path = WRITERS[fmt](source, building, quantize, representative)
        write_text(building / LABELS, "".join(f"{name}\n" for name in source.class_names))
        exported = Classifier.from_path(model_path)
        log(f"checking the exported model against best.keras on up to {VERIFY_IMAGES} validation images ...")
        verification = verify(run, source, exported, quantize)
        info = _describe(run, source, exported, fmt, quantize, model_path, building, verification)
        write_json(building / EXPORT_INFO, info)
    return info


# --------------------------------------------------------------------------- writers


def _write_keras(source: Classifier, folder: Path, quantize: str, representative) -> Path:
    """best.keras as `imgcls.models.inference_model` holds it: float32, without optimizer state."""
    path = folder / "model.keras"
    source.model.save(path)
    return path


def _write_savedmodel(source: Classifier, folder: Path, quantize: str, representative) -> Path:
    """A SavedModel with three serving signatures over the same weights (Keras' ExportArchive)."""
    tf = import_tensorflow()
    import keras

    from imgcls.data.pipeline import decode_image

    model, (height, width), channels = source.model, source.image_size, source.channels

    def probabilities(images):
        return {"probabilities": model(tf.cast(images, tf.float32), training=False)}

    def probabilities_of_encoded(image_bytes):
        # decode_image is load_image without the file read: the training preprocessing, not a copy.
        images = tf.map_fn(lambda contents: decode_image(contents, (height, width), channels), image_bytes,
                           fn_output_signature=tf.TensorSpec([height, width, channels], tf.uint8))
        return probabilities(images)

    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, dtype in (("serving_default", tf.float32), ("serving_uint8", tf.uint8)):
        archive.add_endpoint(name, probabilities,
                             input_signature=[tf.TensorSpec([None, height, width, channels], dtype, name="images")])
    archive.add_endpoint("serving_bytes", probabilities_of_encoded,
                         input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    archive.write_out(str(folder), verbose=False)
    return folder


def _write_tflite(source: Classifier, folder: Path, quantize: str, representative) -> Path:
    """Keras' LiteRT export, restricted to built-in TFLite ops so the file runs on any TFLite runtime."""
    tf = import_tensorflow()

    path = folder / "model.tflite"
    target_spec = {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]}
    options: dict = {"target_spec": target_spec}
    if quantize != "none":
        options["optimizations"] = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        target_spec["supported_types"] = [tf.float16]
    if quantize == "int8":
        target_spec["supported_ops"] = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        options.update(representative_dataset=representative, inference_input_type=tf.uint8,
                       inference_output_type=tf.uint8)
    try:
        with quiet_native_stderr():  # the converter's C++ prints "fully_quantize: 0, inference_type: 6, ..."
            source.model.export(str(path), format="litert", verbose=False, **options)
    except Exception as exc:  # the converter's errors are long MLIR dumps: keep the telling line
        advice = ("try --quantize dynamic or float16 (int8 needs every op in integer form)" if quantize == "int8"
                  else "try --format savedmodel, or a model without that op")
        why = first_line(exc, 240, prefer=("error", "not supported"))
        raise ImgclsError(f"TFLite conversion failed ({why}); {advice}") from None
    return path


WRITERS = {"keras": _write_keras, "savedmodel": _write_savedmodel, "tflite": _write_tflite}


# --------------------------------------------------------------------------- images from the run's split


def _readable_sample(run: Path, subset: str, n: int) -> list[tuple[str, str]]:
    """Up to n usable images of a subset of split.csv as (what TensorFlow reads, class), in a seeded random order
    so every class is likely present. Files are checked once each, in their data folder's scan cache."""
    from imgcls.data.scan import scan_files

    rows = layout.subset_images(run, subset)
    if not rows:
        return []
    root = layout.subset_root(run, subset)
    shuffled = [rows[i] for i in np.random.default_rng(0).permutation(len(rows))]
    sample: list[tuple[str, str]] = []
    for start in range(0, len(shuffled), n):  # chunks: a large training split is not checked beyond need
        chunk = shuffled[start:start + n]
        scanned, _ = scan_files([path for path, _ in chunk], root)
        sample += [(found.readable, label) for found, (_, label) in zip(scanned, chunk) if found.is_image]
        if len(sample) >= n:
            break
    return sample[:n]


def _calibration_images(run: Path, source: Classifier):
    """int8's representative dataset: a generator of single float32 training images."""
    from imgcls.data.pipeline import image_batches

    sample = _readable_sample(run, "train", REPRESENTATIVE_IMAGES)
    if not sample:
        rows = layout.subset_images(run, "train")
        where = (f"none of the {len(rows)} training images in {run / layout.SPLIT} can be read (first: {rows[0][0]})"
                 if rows else f"{run} has no {layout.SPLIT}")
        raise ImgclsError(f"--quantize int8 calibrates on training images, but {where}; "
                          "restore the data folder, or use --quantize dynamic")
    readable = [path for path, _ in sample]

    def representative():
        for image in image_batches(readable, source.image_size, source.channels, batch_size=1):
            yield [image.astype(np.float32)]

    return representative


# --------------------------------------------------------------------------- verification


def verify(run: Path, source: Classifier, exported: Classifier, quantize: str) -> dict:
    """Top-1 agreement and the largest probability difference between exported and Keras model."""
    from imgcls.infer.predict import as_class_probabilities, class_probabilities

    subset = "val"
    sample = _readable_sample(run, subset, VERIFY_IMAGES)
    if not sample:
        subset = "train"
        sample = _readable_sample(run, subset, VERIFY_IMAGES)
    if not sample:
        return {"skipped": f"no readable images listed in {run / layout.SPLIT}; the export was not checked"}
    readable = [path for path, _ in sample]
    expected = as_class_probabilities(class_probabilities(source, readable))
    got = as_class_probabilities(class_probabilities(exported, readable))
    index = {name: i for i, name in enumerate(source.class_names)}
    truth = np.array([index.get(label, -1) for _, label in sample])
    agreement = float(np.mean(expected.argmax(1) == got.argmax(1)))
    report = {
        "images": len(readable),
        "subset": subset,
        "top1_agreement": round(agreement, 4),
        "max_probability_difference": round(float(np.abs(expected - got).max()), 6),
        "keras_accuracy": round(float(np.mean(expected.argmax(1) == truth)), 4),
        "exported_accuracy": round(float(np.mean(got.argmax(1) == truth)), 4),
        "required_agreement": MIN_INT8_AGREEMENT if quantize == "int8" else MIN_AGREEMENT,
    }
    report["passed"] = agreement >= report["required_agreement"]
    if not report["passed"]:
        advice = "try --quantize dynamic or float16" if quantize == "int8" else "try --quantize none or --format savedmodel"
        raise ImgclsError(f"the exported model agrees with best.keras on only {agreement:.1%} of {len(readable)} {subset} images "
                          f"(needs {report['required_agreement']:.0%}; largest probability difference "
                          f"{report['max_probability_difference']}); nothing was written; {advice}")
    return report


# --------------------------------------------------------------------------- export.json


def _describe(run, source, exported, fmt, quantize, model_path, folder, verification) -> dict:
    tf = import_tensorflow()
    import keras

    config = layout.read_config(run)
    (height, width), channels = source.image_size, source.channels
    input_dtype, input_quantization = "float32", None
    if exported.kind == "tflite":
        detail = exported.model.get_input_details()[0]
        input_dtype = np.dtype(detail["dtype"]).name
        scale, zero_point = detail["quantization"]
        input_quantization = {"scale": float(scale), "zero_point": int(zero_point)} if scale else None
    classes = source.class_names
    binary = config["data"]["label_mode"] == "binary"
    info = {
        "format": fmt,
        "quantize": quantize,
        "model": "." if model_path == folder else model_path.name,
        "input": {"shape": [None, height, width, channels], "dtype": input_dtype, "value_range": [0, 255],
                  "color_mode": "rgb" if channels == 3 else "grayscale"},
        "output": {"shape": [None, 1 if binary else len(classes)],
                   "meaning": f"probability of {classes[1]} (1 - p is {classes[0]})" if binary
                   else "class probabilities, in labels.txt order"},
        "preprocessing": (f"decode the image (JPEG, PNG, BMP or the first GIF frame) to {channels} channel(s), "
                          f"resize to {height}x{width} (bilinear, antialiased, aspect ratio not kept), round to 0-255; "
                          "no normalisation: the model rescales by 1/255 itself (imgcls.data.pipeline.load_image)"),
        # The training precision stays with training: every export computes in float32 unless quantized.
        "precision": {"trained": config.get("imgcls", {}).get("precision"), "computes": COMPUTES[quantize]},
        "classes": classes,
        "source_run": str(Path(run).resolve()),
        "source_model": layout.MODEL,
        "versions": {"imgcls": imgcls.__version__, "tensorflow": tf.__version__, "keras": keras.__version__},
        "created": datetime.now().isoformat(timespec="seconds"),
        "size_bytes": _model_size(folder),
        "source_size_bytes": source.source.stat().st_size,
        "verification": verification,
    }
    if input_quantization:
        info["input"]["quantization"] = input_quantization
    if fmt == "savedmodel":
        info["signatures"] = {
            "serving_default": "images: float32 [batch, h, w, c], 0-255 -> probabilities",
            "serving_uint8": "images: uint8 [batch, h, w, c] -> probabilities",
            "serving_bytes": "image_bytes: string [batch], encoded JPEG/PNG/BMP/GIF -> probabilities",
        }
    return info


def _model_size(folder: Path) -> int:
    """Bytes of the model itself: every file but labels.txt and export.json."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.name not in (LABELS, EXPORT_INFO))


def export_report(info: dict, target: Path) -> list[str]:
    """What `imgcls export` says about an export: its check against best.keras and its size."""
    check, lines = info["verification"], []
    if "skipped" in check:
        lines.append(f"warning: {check['skipped']}")
    else:
        lines.append(f"top-1 agreement with best.keras: {check['top1_agreement']:.1%} of {check['images']} {check['subset']} "
                     f"images; largest probability difference {check['max_probability_difference']:.2g}; accuracy "
                     f"{check['keras_accuracy']:.1%} (keras) vs {check['exported_accuracy']:.1%} (exported)")
        if check["top1_agreement"] < 1:
            changed = round((1 - check["top1_agreement"]) * check["images"])
            lines.append(f"note: the export changed the top-1 class of {changed} of {check['images']} images")
    size, source_size = info["size_bytes"], info["source_size_bytes"]
    ratio = ("the same size" if size == source_size else f"{source_size / size:.1f}x smaller" if size < source_size
             else f"{size / source_size:.1f}x larger")
    kib = lambda n: f"{n / 1024:,.1f} KiB"  # noqa: E731
    lines.append(f"size: {kib(size)} ({Path(target).name}) vs {kib(source_size)} (best.keras), {ratio}")
    return lines
