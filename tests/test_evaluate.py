"""imgcls evaluate: metrics against hand-computed values, agreement with training, the report and its plots."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_user_error, make_image_folder

from imgcls import files
from imgcls.run import layout
from imgcls.infer.evaluate import evaluate_after_training
from imgcls.infer.metrics import (
    averages, classification_report, confusion_matrix, default_top_k, most_confident_mistakes, normalize_rows,
    per_class_scores, top_k_accuracy,
)

EVAL_FILES = ["eval.json", "confusion_matrix.png", "confusion_matrix_normalized.png", "misclassified.png",
              "misclassified_cam.png"]

# Ten fixed predictions over three classes; every figure below is worked out by hand from them.
Y_TRUE = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
Y_PRED = [0, 0, 1, 2, 1, 1, 0, 2, 2, 1]


def one_hot_probs(predicted, num_classes=3, confidence=0.6):
    probs = np.full((len(predicted), num_classes), (1 - confidence) / (num_classes - 1))
    probs[np.arange(len(predicted)), predicted] = confidence
    return probs


# --------------------------------------------------------------------------- metrics on fixed predictions


def test_confusion_matrix_has_true_classes_as_rows_and_predictions_as_columns():
    assert confusion_matrix(Y_TRUE, Y_PRED, 3).tolist() == [[2, 1, 1],
                                                            [1, 2, 0],
                                                            [0, 1, 2]]


def test_precision_recall_f1_and_support_match_hand_computed_values():
    scores = per_class_scores(confusion_matrix(Y_TRUE, Y_PRED, 3))
    # precision = hits / predicted as the class; recall = hits / images of the class
    np.testing.assert_allclose(scores["precision"], [2 / 3, 2 / 4, 2 / 3])
    np.testing.assert_allclose(scores["recall"], [2 / 4, 2 / 3, 2 / 3])
    np.testing.assert_allclose(scores["f1"], [4 / 7, 4 / 7, 2 / 3])  # 2pr / (p + r)
    assert scores["support"].tolist() == [4, 3, 3]


def test_macro_and_weighted_averages_match_hand_computed_values():
    means = averages(per_class_scores(confusion_matrix(Y_TRUE, Y_PRED, 3)))
    assert means["macro"] == pytest.approx({"precision": 11 / 18, "recall": 11 / 18, "f1": 38 / 63, "support": 10})
    assert means["weighted"] == pytest.approx({"precision": 37 / 60, "recall": 0.6, "f1": 0.6, "support": 10})


def test_report_gathers_accuracy_per_class_rows_and_the_matrix():
    report = classification_report(Y_TRUE, one_hot_probs(Y_PRED), ["cat", "dog", "fox"], top_k=2)
    assert report["accuracy"] == pytest.approx(0.6) and report["images"] == 10
    assert report["per_class"][1] == pytest.approx({"class": "dog", "precision": 0.5, "recall": 2 / 3, "f1": 4 / 7, "support": 3})
    assert report["confusion_matrix"] == [[2, 1, 1], [1, 2, 0], [0, 1, 2]]
    assert report["top_k"] == {"k": 2, "accuracy": pytest.approx(1.0)}  # 0.2 ties count as inside, as in Keras


def test_a_class_never_predicted_scores_zero_not_nan():
    scores = per_class_scores(confusion_matrix([0, 1, 2], [0, 0, 0], 3))
    assert scores["precision"].tolist() == [1 / 3, 0.0, 0.0]
    assert scores["f1"].tolist()[1:] == [0.0, 0.0]


def test_top_k_accuracy_matches_keras_including_ties_at_the_boundary():
    import keras

    probs = np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.4, 0.4, 0.2], [0.2, 0.3, 0.5]], dtype="float32")
    labels = np.array([1, 0, 1, 2])
    assert [top_k_accuracy(labels, probs, k) for k in (1, 2, 3)] == [0.5, 0.75, 1.0]
    for k in (1, 2):
        metric = keras.metrics.SparseTopKCategoricalAccuracy(k=k)
        metric.update_state(labels, probs)
        assert float(metric.result()) == top_k_accuracy(labels, probs, k)


def test_normalized_rows_sum_to_one_and_an_empty_row_stays_zero():
    normalized = normalize_rows(np.array([[3, 1, 0], [0, 0, 0], [1, 1, 2]]))
    assert normalized.sum(axis=1).tolist() == [1.0, 0.0, 1.0]
    assert normalized[0].tolist() == [0.75, 0.25, 0.0]


def test_most_confident_mistakes_come_first_and_correct_ones_never():
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.2, 0.8], [0.6, 0.4], [0.45, 0.55]])
    assert most_confident_mistakes([0, 0, 0, 1, 1], probs, limit=10).tolist() == [2, 1, 3]
    assert most_confident_mistakes([0, 0, 0, 1, 1], probs, limit=2).tolist() == [2, 1]


def test_top_k_defaults_to_5_only_when_there_are_more_than_5_classes():
    assert default_top_k(10, None) == 5 and default_top_k(5, None) is None
    assert default_top_k(3, 2) == 2 and default_top_k(3, 7) == 3


# --------------------------------------------------------------------------- plots


@pytest.mark.parametrize("num_classes", [3, 30])
def test_evaluation_plots_render_for_3_and_30_classes(tmp_path, num_classes):
    from imgcls.plots import plot_confusion_matrix, plot_misclassified

    rng = np.random.default_rng(num_classes)
    names = [f"class with a long name {i}" for i in range(num_classes)]
    matrix = np.diag(rng.integers(10, 60, num_classes)) + rng.poisson(0.5, (num_classes, num_classes))
    counts = plot_confusion_matrix(matrix, names, tmp_path / "cm.png")
    shares = plot_confusion_matrix(normalize_rows(matrix), names, tmp_path / "cmn.png", normalized=True)
    images = [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(7)]
    mistakes = [{"true": names[i % num_classes], "predicted": names[-1], "confidence": 0.9} for i in range(7)]
    grid = plot_misclassified(images, mistakes, tmp_path / "wrong.png")
    for path in (counts, shares, grid):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 15_000
    # the figure grows with the classes, so 30 rows of labels stay readable
    from PIL import Image

    assert Image.open(counts).height > (1000 if num_classes == 30 else 300)


def test_misclassified_grid_says_so_when_there_are_no_mistakes(tmp_path):
    from imgcls.plots import plot_misclassified

    assert plot_misclassified([], [], tmp_path / "none.png").stat().st_size > 3_000


# --------------------------------------------------------------------------- evaluate on runs


def test_training_evaluates_the_best_checkpoint_into_the_run_folder(trained_run):
    for name in EVAL_FILES:
        assert (trained_run / name).stat().st_size > 1_000, name
    report = json.loads((trained_run / "eval.json").read_text())
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert report["split"] == "val" and report["images"] == metrics["val_images"] == 9
    assert report["checkpoint"]["epoch"] == metrics["best_epoch"]
    assert report["accuracy"] == pytest.approx(metrics["best"]["val_accuracy"], abs=1e-6)
    assert report["loss"] == pytest.approx(metrics["best"]["val_loss"], rel=1e-4)


@pytest.mark.slow
def test_evaluate_reports_the_checkpoint_not_the_last_epoch(cli, tmp_path, tiny_config):
    """Checkpoint on the *highest* val_loss: best.keras is an early epoch, the model in memory the last one."""
    result = cli("train", tiny_config, "--runs-dir", tmp_path, "--set", "train.epochs=3",
                 "--set", "callbacks.checkpoint={monitor: val_loss, mode: max}",
                 "--set", "evaluate.after_training=false")
    assert result.exit_code == 0, result.output
    run = (tmp_path / "latest").resolve()
    history = layout.read_history(run)
    metrics = json.loads((run / "metrics.json").read_text())
    best = history[metrics["best_epoch"] - 1]
    assert best["val_loss"] == max(r["val_loss"] for r in history)
    assert not (run / "eval.json").exists()  # after_training off

    report = json.loads(cli("evaluate", run, "--json").stdout)
    assert report["checkpoint"]["epoch"] == metrics["best_epoch"]
    assert report["accuracy"] == pytest.approx(best["val_accuracy"], abs=1e-6)
    assert report["loss"] == pytest.approx(best["val_loss"], rel=1e-4)
    assert report["loss"] != pytest.approx(history[-1]["val_loss"], rel=1e-4)  # not the final weights
    assert json.loads((run / "eval.json").read_text()) == report


def test_evaluate_prints_accuracy_loss_and_the_per_class_table(cli, trained_run):
    result = cli("evaluate", trained_run)
    assert result.exit_code == 0, result.output
    for fragment in ("accuracy", "loss", "precision", "recall", "f1", "support", "macro avg", "weighted avg",
                     "blue", "green", "red", "confusion_matrix.png", "epoch"):
        assert fragment in result.stdout, fragment


def test_evaluate_uses_runs_latest_by_default(cli, trained_run):
    report = json.loads(cli("evaluate", "--runs-dir", trained_run.parent, "--json").stdout)
    assert report["run"] == trained_run.name


def test_evaluate_another_folder_with_the_same_classes(cli, trained_run, tiny_data, tmp_path):
    run = shutil.copytree(trained_run, tmp_path / trained_run.name)
    result = cli("evaluate", run, "--data", tiny_data, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["split"] is None and report["images"] == 36
    assert sum(row["support"] for row in report["per_class"]) == 36
    assert (run / "eval_data-colours.json").is_file() and (run / "confusion_matrix_data-colours.png").is_file()


def test_error_evaluate_a_folder_whose_classes_differ_lists_the_difference(cli, trained_run, tmp_path):
    other = make_image_folder(tmp_path / "other", classes={"red": (200, 40, 40), "blue": (40, 60, 200), "pink": (250, 150, 200)},
                              per_class=2)
    assert_user_error(cli("evaluate", trained_run, "--data", other), "missing class folders ['green']",
                      "class folders the training data does not have ['pink']")


def test_error_evaluate_test_split_of_a_run_without_one(cli, trained_run):
    assert_user_error(cli("evaluate", trained_run, "--split", "test"), "no test images", "--data DIR")


def test_error_evaluate_split_and_data_together(cli, trained_run, tiny_data):
    assert_user_error(cli("evaluate", trained_run, "--split", "val", "--data", tiny_data), "--split", "--data")


def _copy_with_test_rows(trained_run: Path, tmp_path: Path, per_class: int = 2) -> Path:
    """A copy of the run whose split.csv also has test rows (as a run trained with a test split has)."""
    run = shutil.copytree(trained_run, tmp_path / trained_run.name)
    rows = layout.read_split(run)
    taken: dict[str, int] = {}
    for row in rows:
        if row["subset"] == "train" and taken.get(row["class"], 0) < per_class:
            row["subset"] = "test"
            taken[row["class"]] = taken.get(row["class"], 0) + 1
    files.write_csv(run / "split.csv", rows)
    return run


def test_evaluate_test_split_reads_the_test_rows_of_split_csv(cli, trained_run, tmp_path):
    run = _copy_with_test_rows(trained_run, tmp_path)
    report = json.loads(cli("evaluate", run, "--split", "test", "--json").stdout)
    assert report["split"] == "test" and report["images"] == 6
    assert (run / "eval_test.json").is_file() and (run / "misclassified_test.png").is_file()
    assert json.loads((run / "eval.json").read_text())["split"] == "val"  # the val report is kept


def test_training_also_evaluates_the_test_split_when_there_is_one(trained_run, tmp_path):
    from imgcls.config import load_config

    run = _copy_with_test_rows(trained_run, tmp_path)
    (run / "eval.json").unlink()
    lines = []
    evaluate_after_training(load_config(run / "config.yaml"), run, "finished", lines.append)
    assert (run / "eval.json").is_file() and (run / "eval_test.json").is_file()
    assert any("on val" in line for line in lines) and any("on test" in line for line in lines)


def test_error_evaluate_when_split_images_are_gone_names_them(cli, trained_run, tmp_path):
    run = shutil.copytree(trained_run, tmp_path / trained_run.name)
    rows = layout.read_split(run) + [{"path": "red/ghost.png", "class": "red", "subset": "val"}]
    files.write_csv(run / "split.csv", rows)
    assert_user_error(cli("evaluate", run), "1 of the 10 val images in split.csv are missing", "red/ghost.png")


def test_evaluate_decodes_each_image_once_and_caches_nothing(cli, trained_run, tmp_path, monkeypatch):
    """One pass over the images: a cache would only hold every decoded image in memory (it did, once)."""
    import tensorflow as tf

    def no_cache(self, *args, **kwargs):
        raise AssertionError("evaluate cached a dataset")

    monkeypatch.setattr(tf.data.Dataset, "cache", no_cache)
    run = shutil.copytree(trained_run, tmp_path / trained_run.name)
    result = cli("evaluate", run, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["images"] == 9


def test_evaluate_reads_the_recorded_split_instead_of_splitting_again(cli, trained_run, tmp_path):
    run = shutil.copytree(trained_run, tmp_path / trained_run.name)
    rows = layout.read_split(run)
    for row in rows:
        row["subset"] = "val" if row["class"] == "red" and row["subset"] == "val" else "train"
    files.write_csv(run / "split.csv", rows)
    report = json.loads(cli("evaluate", run, "--json").stdout)
    assert report["images"] == 3 and [r["support"] for r in report["per_class"]] == [0, 0, 3]


def test_top_k_comes_from_the_run_config(cli, trained_run, tmp_path):
    run = shutil.copytree(trained_run, tmp_path / trained_run.name)
    config = layout.read_config(run)
    config["evaluate"] = {**config.get("evaluate", {}), "top_k": 2}
    files.write_yaml(run / "config.yaml", config)
    report = json.loads(cli("evaluate", run, "--json").stdout)
    assert report["top_k"]["k"] == 2 and 0 <= report["top_k"]["accuracy"] <= 1
    assert "top-2 accuracy" in cli("evaluate", run).stdout
