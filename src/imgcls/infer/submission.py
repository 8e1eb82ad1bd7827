"""A competition's submission file: one row per test image, its id and its predicted class.

    imgcls predict data/food11/test --csv submission.csv --format kaggle --id-column Id --label-column Category
    imgcls predict data/comp/test --csv submission.csv --template data/comp/sample_submission.csv

An image's id is its file name without the extension (what Kaggle's and the
course's CSV files use). A template keeps its columns and row order; its ids
are matched to the images, and every id must have one image and every image
an id, or nothing is written. When a template's other columns are the class
names, each gets that class's probability (the format of competitions scored
by log loss).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePath

from imgcls.data.labels import read_table
from imgcls.errors import ImgclsError
from imgcls.files import write_csv
from imgcls.infer.predict import Prediction


@dataclass
class Template:
    """A sample submission: its columns, its ids in order, and which column(s) the predictions fill."""

    columns: list[str]
    id_column: str
    rows: list[dict[str, str]]
    label_column: str | None  # the predicted class goes here, or
    probability_columns: list[str]  # one probability per class goes into each of these

    @classmethod
    def read(cls, path: Path, class_names: list[str], id_column: str | None, label_column: str | None) -> Template:
        header, lines = read_table(path, "--template")
        rows = [dict(zip(header, line + [""] * (len(header) - len(line)))) for _, line in lines]
        id_column = _pick(path, header, id_column, header[0], "--id-column")
        others = [column for column in header if column != id_column]
        if not others:
            raise ImgclsError(f"--template: {path} has only the id column {id_column!r}; it needs a column for the labels")
        if label_column is None and set(others) & set(class_names):
            return cls(header, id_column, rows, None, _probability_columns(path, others, class_names))
        label_column = _pick(path, header, label_column, others[0], "--label-column")
        return cls(header, id_column, rows, label_column, [])


def _probability_columns(path: Path, columns: list[str], class_names: list[str]) -> list[str]:
    """A column per class, each to get that class's probability: every class, and nothing else."""
    strangers = [column for column in columns if column not in class_names]
    missing = [name for name in class_names if name not in columns]
    if strangers or missing:
        what = ([f"columns that are not classes of the run ({', '.join(strangers)})"] if strangers else []) \
            + ([f"no column for the classes {', '.join(missing)}"] if missing else [])
        raise ImgclsError(f"--template: {path} has a column per class, but {' and '.join(what)}; the run's classes "
                          f"are {', '.join(class_names)} (or name the one label column with --label-column)")
    return columns


def write_submission(path: Path, predictions: list[Prediction], template: Template | None = None,
                     id_column: str | None = None, label_column: str | None = None) -> int:
    """Write the submission CSV; returns its rows. Ids that do not pair up with images are one ImgclsError."""
    by_id = _ids(predictions)
    if template is None:
        ids = sorted(by_id, key=_natural)
        rows = [{id_column or "id": i, label_column or "label": by_id[i].label} for i in ids]
    else:
        rows = _fill(template, by_id)
    write_csv(path, rows)
    return len(rows)


def _ids(predictions: list[Prediction]) -> dict[str, Prediction]:
    by_id: dict[str, Prediction] = {}
    for prediction in predictions:
        image_id = PurePath(prediction.path).stem
        if image_id in by_id and by_id[image_id].path == prediction.path:
            continue  # the same file named twice
        if image_id in by_id:
            raise ImgclsError(f"two images have the id {image_id!r} ({by_id[image_id].path}, {prediction.path}); "
                              "a submission needs one image per id: rename or remove one")
        by_id[image_id] = prediction
    return by_id


def _fill(template: Template, by_id: dict[str, Prediction]) -> list[dict[str, str]]:
    """The template's rows, in order, with the prediction of each id's image; an id without one, or an image
    without an id, is an error."""
    numbers = {str(int(i)): p for i, p in by_id.items() if i.isdigit()}  # id 7 for 0007.jpg

    def image_of(value: str) -> Prediction | None:
        for image_id in (value, PurePath(value).stem):  # ids given with or without the extension
            found = by_id.get(image_id) or (numbers.get(str(int(image_id))) if image_id.isdigit() else None)
            if found is not None:
                return found
        return None

    ids = [row[template.id_column].strip() for row in template.rows]
    missing = [i for i in ids if image_of(i) is None]
    used = {id(image_of(i)) for i in ids}
    extra = [p.path for p in by_id.values() if id(p) not in used]
    if missing or extra:
        what = ([f"{len(missing)} id(s) of the template have no image (first: {', '.join(missing[:3])})"] if missing else []) \
            + ([f"{len(extra)} image(s) have no row in the template (first: {', '.join(extra[:3])})"] if extra else [])
        raise ImgclsError(f"--template: {'; '.join(what)}; predict the folder the template was made for")
    rows = []
    for row, image_id in zip(template.rows, ids):
        prediction = image_of(image_id)
        row = dict(row)
        if template.label_column:
            row[template.label_column] = prediction.label
        else:
            probability = {t["label"]: t["confidence"] for t in prediction.top_k}
            row.update({column: probability.get(column, 0.0) for column in template.probability_columns})
        rows.append(row)
    return rows


def _pick(path: Path, header: list[str], name: str | None, default: str, option: str) -> str:
    if name is None:
        return default
    if name not in header:
        raise ImgclsError(f"{option}: {path} has no column {name!r}; its columns are {', '.join(header)}")
    return name


def _natural(text: str) -> list:
    """'2' before '10': ids that are numbers sort as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]
