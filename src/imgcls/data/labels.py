"""Where an image's class comes from: its folder, its file name, or a row of a CSV file.

    LabelSource.of(config.data)     the data.labels setting and its keys, as one object
    source.label(root, keys)        a class name (or the reason there is none) for each image under `root`
    source.has_labels(root)         whether a folder is labelled at all (an unlabelled test/ is not a test set)
    order_classes(names, given)     the class order: data.class_names, else numeric, else alphabetical

Every source ends in the same `FolderScan` (`imgcls.data.folders.scan_folder`),
so splitting, de-duplication, the class table, split.csv and the run folder
never know where the labels came from. `folders` walks one class folder at a
time (`scan_folder` does that itself); `filename` and `csv` label the files of
one flat or nested folder.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from imgcls.errors import ImgclsError, did_you_mean

NO_LABEL = ""  # label() gives this, with a reason, for an image it cannot label


@dataclass
class LabelSource:
    """data.labels and the keys that go with it."""

    kind: str = "folders"  # folders | filename | csv
    filename_pattern: str | None = None
    class_names: list[str] | None = None
    labels_file: Path | None = None
    path_column: str | None = None
    label_column: str | list[str] | None = None
    _table: CsvLabels | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, data: Any) -> LabelSource:
        return cls(data.labels, data.filename_pattern, list(data.class_names) if data.class_names else None,
                   data.labels_file, data.path_column, data.label_column)

    @property
    def from_folders(self) -> bool:
        return self.kind == "folders"

    def describe(self) -> str:
        """Where the labels come from, as messages say it: 'labels from <this>'."""
        if self.kind == "filename":
            return f"file names (data.filename_pattern '{self.filename_pattern}')"
        if self.kind == "csv":
            columns = f", column {', '.join(self._table.label_columns)}" if self._table else ""
            return f"{self.labels_file}{columns}"
        return "class folders"

    @property
    def table(self) -> CsvLabels:
        """The CSV file, read once per plan."""
        if self._table is None:
            self._table = CsvLabels.read(Path(self.labels_file), self.path_column, self.label_column)
        return self._table

    def label(self, root: Path, keys: list[str]) -> list[tuple[str, str]]:
        """(class name, NO_LABEL) or (NO_LABEL, why) for each image `keys` (paths relative to `root`)."""
        if self.kind == "filename":
            pattern = compile_pattern(self.filename_pattern)
            labels = [_from_name(pattern, key) for key in keys]
            if keys and not any(name for name, _ in labels):
                tried = ", ".join(PurePosixPath(key).name for key in keys[:3])
                raise ImgclsError(f"data.filename_pattern: '{self.filename_pattern}' matches no file name in {root} "
                                  f"(tried {tried}); it is searched in each file name and its first group is the label")
        else:
            labels = self.table.label(root, keys)
        return [(self._class_of(name), why) if name else (name, why) for name, why in labels]

    def has_labels(self, root: Path, keys: list[str], train: tuple[Path, list[str]] | None = None) -> bool:
        """Whether any of the files `keys` under `root` has a label (False for a Kaggle-style unlabelled test/);
        `train`: the training folder and its files, whose CSV rows do not count here."""
        if self.kind == "filename":
            pattern = compile_pattern(self.filename_pattern)
            return any(_from_name(pattern, key)[0] for key in keys)
        taken = self.table.rows_naming(*train) if train else set()
        return self.table.labels_any(root, keys, taken)

    def _class_of(self, value: str) -> str:
        """A label as its class name: data.class_names maps an index to a name, a name is kept."""
        if self.class_names is None or value in self.class_names:
            return value
        if value.isdigit() and int(value) < len(self.class_names):
            return self.class_names[int(value)]
        return value  # not a class: the scan reports it as one the classes do not have


def compile_pattern(pattern: str) -> re.Pattern:
    """data.filename_pattern compiled; it needs one group, or a group named `label`."""
    try:
        compiled = re.compile(pattern)
    except re.error as error:
        raise ImgclsError(f"data.filename_pattern: '{pattern}' is not a regular expression ({error})") from None
    if compiled.groups != 1 and "label" not in compiled.groupindex:
        raise ImgclsError(f"data.filename_pattern: '{pattern}' needs one group around the label, e.g. '^(\\d+)_', "
                          "or a group named label: (?P<label>...)")
    return compiled


def _from_name(pattern: re.Pattern, key: str) -> tuple[str, str]:
    match = pattern.search(PurePosixPath(key).name)
    if match is None:
        return NO_LABEL, "its name does not match data.filename_pattern"
    value = match.group("label" if "label" in pattern.groupindex else 1)
    return (value, NO_LABEL) if value else (NO_LABEL, "data.filename_pattern matched an empty label")


def order_classes(names: set[str], given: list[str] | None) -> list[str]:
    """data.class_names' order when given; numeric when every name is a number (2 before 10); else alphabetical."""
    if given:
        return list(given)
    if names and all(name.isdigit() for name in names):
        return sorted(names, key=int)
    return sorted(names)


# --------------------------------------------------------------------------- CSV files


@dataclass
class CsvLabels:
    """A labels file: one row per image, its path or id and its label (or one 0/1 column per class).

    A row labels one image, once: rows the training folder used do not label a
    validation or test folder too (numeric ids repeat across folders)."""

    path: Path
    rows: dict[str, tuple[str, int]]  # the path column's value -> (label, line number)
    conflicts: dict[str, str]  # values given two different labels -> the reason
    lines: int = 0  # rows in the file
    label_columns: list[str] = field(default_factory=list)
    used: set[str] = field(default_factory=set)

    @classmethod
    def read(cls, path: Path, path_column: str | None, label_column: str | list[str] | None) -> CsvLabels:
        header, lines = read_table(path)
        id_column = _column(path, header, path_column, 0, "data.path_column")
        if isinstance(label_column, list):
            columns = [_column(path, header, name, None, "data.label_column") for name in label_column]
        else:
            columns = [_column(path, header, label_column, 1, "data.label_column")]
            if label_column is None:
                _refuse_one_hot_default(path, header, lines, id_column, columns[0])
        rows, conflicts = {}, {}
        for number, line in lines:
            value = _normal(line[id_column].strip()) if id_column < len(line) else ""
            if not value:
                continue
            label, why = _row_label(line, columns, header)
            if why:
                conflicts[value] = f"{path.name} line {number}: {why}"
                continue
            earlier = rows.get(value)
            if earlier is not None and earlier[0] != label:
                conflicts[value] = f"{path.name} lines {earlier[1]} and {number} give it two labels ({earlier[0]}, {label})"
            rows.setdefault(value, (label, number))
        if not rows and not conflicts:
            raise ImgclsError(f"{path}: no labelled rows; it needs a header line, then one row per image (path or id, label)")
        return cls(path, rows, conflicts, len(lines), [header[c] for c in columns])

    def _matches(self, root: Path, keys: list[str]) -> dict[str, list[str]]:
        """The files of `root` each row names: by path, path without the extension, either with the folder's own
        name in front (rows written from the folder above); else by file name or id alone (images one folder down)."""
        exact: dict[str, list[str]] = {}
        loose: dict[str, list[str]] = {}
        for key in keys:
            stem = str(PurePosixPath(key).with_suffix(""))
            for name in {key, stem, f"{root.name}/{key}", f"{root.name}/{stem}"}:
                exact.setdefault(name, []).append(key)
            for name in {PurePosixPath(key).name, PurePosixPath(key).stem}:
                loose.setdefault(name, []).append(key)
        return {value: exact.get(value) or loose.get(value) or [] for value in [*self.rows, *self.conflicts]}

    def label(self, root: Path, keys: list[str]) -> list[tuple[str, str]]:
        earlier = set(self.used)  # rows an earlier folder (train) used label nothing here
        matches = {value: files for value, files in self._matches(root, keys).items() if files and value not in earlier}
        found: dict[str, tuple[str, str]] = {}
        for value, files in matches.items():
            self.used.add(value)
            if value in self.conflicts:
                reasons = [(key, self.conflicts[value]) for key in files]
            elif len(files) > 1:
                shown = ", ".join(files[:2]) + (" ..." if len(files) > 2 else "")
                reasons = [(key, f"{self.path.name}: {value!r} names {len(files)} files ({shown}); give the path "
                                 "with the extension") for key in files]
            else:
                label, before = self.rows[value][0], found.get(files[0])
                if before is None:
                    found[files[0]] = (label, NO_LABEL)
                elif before[0] != label:  # another spelling of the same file, with another label
                    found[files[0]] = (NO_LABEL, f"{self.path.name} gives it two labels")
                continue
            for key, why in reasons:
                found[key] = (NO_LABEL, why)
        return [found.get(key, (NO_LABEL, f"no row in {self.path.name}")) for key in keys]

    def labels_any(self, root: Path, keys: list[str], taken: set[str] = frozenset()) -> bool:
        """Whether a row not in `taken` names a file of `root`."""
        return any(files and value not in taken for value, files in self._matches(root, keys).items())

    def rows_naming(self, root: Path, keys: list[str]) -> set[str]:
        return {value for value, files in self._matches(root, keys).items() if files}

    def no_match(self, root: Path) -> None:
        """Raise the one-line error for a labels file none of whose rows names an image of `root`."""
        first = ", ".join(list(self.rows)[:3])
        raise ImgclsError(f"{self.path}: none of its {self.lines} rows names an image in {root} (first: {first}); "
                          "the path column holds paths relative to that folder, or ids (file names without the "
                          "extension); check data.path_column and data.dir")

    def unused(self) -> list[tuple[str, str]]:
        """(value, reason) of every row that named no image: a missing file, or a typo in the path column."""
        where = str(self.path.resolve())
        return [(where, f"line {line}: {value!r} names no image") for value, (_, line) in self.rows.items()
                if value not in self.used]


def _refuse_one_hot_default(path: Path, header: list[str], lines: list, id_column: int, label_column: int) -> None:
    """No label_column, and the default (second) column holds only 0 and 1 beside other such columns: the file
    has one column per class, and training on the second column alone would learn the wrong task."""
    def binary(column: int) -> bool:
        values = {line[column].strip() for _, line in lines if column < len(line)}
        return bool(values) and values <= {"0", "1", "0.0", "1.0"}

    one_hot = [header[c] for c in range(len(header)) if c != id_column and binary(c)]
    if binary(label_column) and len(one_hot) >= 2:
        raise ImgclsError(f"data.label_column: {path}'s columns {', '.join(one_hot)} hold only 0 and 1, one column per "
                          f"class; set data.label_column: [{', '.join(one_hot)}] (or name the one label column)")


def _normal(value: str) -> str:
    return value.replace("\\", "/").removeprefix("./")


def read_table(path: Path, key: str = "data.labels_file") -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header and the (line number, fields) of a CSV or TSV file; the delimiter is sniffed (, ; or tab)."""
    path = Path(path)
    if path.is_dir():
        raise ImgclsError(f"{key}: {path} is a folder; give the CSV file")
    if not path.is_file():
        raise ImgclsError(f"{key}: {path} not found (relative paths start from {Path.cwd()})")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ImgclsError(f"{path}: not UTF-8 text (byte {error.start}); save it as UTF-8 CSV") from None
    except OSError as error:
        raise ImgclsError(f"{path}: cannot be read ({error.strerror})") from None
    if not text.strip():
        raise ImgclsError(f"{path}: empty; it needs a header line, then one row per image (path or id, label)")
    first = text.splitlines()[0]
    delimiter = max(",;\t", key=first.count)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = [name.strip() for name in next(reader)]
        lines = [(reader.line_num, line) for line in reader if any(cell.strip() for cell in line)]
    except csv.Error as error:
        raise ImgclsError(f"{path}: not a readable CSV file (line {reader.line_num}: {error})") from None
    if len(header) < 2:
        raise ImgclsError(f"{path}: the header {first!r} has one column; it needs a path or id column and a label column")
    return header, lines


def _column(path: Path, header: list[str], name: str | None, default: int | None, key: str) -> int:
    if name is None:
        return default
    if name in header:
        return header.index(name)
    hint = did_you_mean(name, header)
    raise ImgclsError(f"{key}: {path} has no column {name!r}; {hint + ' ' if hint else ''}its columns are {', '.join(header)}")


def _row_label(line: list[str], columns: list[int], header: list[str]) -> tuple[str, str]:
    """A row's label: the one label column's value, or the name of the one class column holding 1."""
    cells = [line[c].strip() if c < len(line) else "" for c in columns]
    if len(columns) == 1:
        return (cells[0], NO_LABEL) if cells[0] else (NO_LABEL, "an empty label")
    hot = [header[c] for c, cell in zip(columns, cells) if cell.lower() in ("1", "1.0", "true", "yes")]
    if len(hot) != 1:
        return NO_LABEL, f"{len(hot)} of the label columns are set; a single-label classifier needs exactly one"
    return hot[0], NO_LABEL
