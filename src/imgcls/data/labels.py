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
        if self.kind == "filename":
            return f"labels from file names (data.filename_pattern {self.filename_pattern!r})"
        if self.kind == "csv":
            return f"labels from {self.labels_file}"
        return "labels from class folders"

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
                raise ImgclsError(f"data.filename_pattern: {self.filename_pattern!r} matches no file name in {root} "
                                  f"(tried {tried}); it is searched in each file name and its first group is the label")
        else:
            labels = self.table.label(root, keys)
        return [(self._class_of(name), why) if name else (name, why) for name, why in labels]

    def has_labels(self, root: Path, keys: list[str]) -> bool:
        """Whether any of the files `keys` under `root` has a label (False for a Kaggle-style unlabelled test/)."""
        if self.kind == "filename":
            pattern = compile_pattern(self.filename_pattern)
            return any(_from_name(pattern, key)[0] for key in keys)
        return self.table.matches_any(root, keys)

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
        raise ImgclsError(f"data.filename_pattern: {pattern!r} is not a regular expression ({error})") from None
    if compiled.groups != 1 and "label" not in compiled.groupindex:
        raise ImgclsError(f"data.filename_pattern: {pattern!r} needs one group around the label, e.g. '^(\\d+)_', "
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
    """A labels file: one row per image, its path or id and its label (or one 0/1 column per class)."""

    path: Path
    rows: dict[str, tuple[str, int]]  # the path column's value -> (label, line number)
    conflicts: dict[str, str]  # values given two different labels -> the reason
    used: set[str] = field(default_factory=set)

    @classmethod
    def read(cls, path: Path, path_column: str | None, label_column: str | list[str] | None) -> CsvLabels:
        header, lines = read_table(path)
        id_column = _column(path, header, path_column, 0, "data.path_column")
        if isinstance(label_column, list):
            columns = [_column(path, header, name, None, "data.label_column") for name in label_column]
        else:
            columns = [_column(path, header, label_column, 1, "data.label_column")]
        rows, conflicts = {}, {}
        for number, line in lines:
            value = line[id_column].strip() if id_column < len(line) else ""
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
        return cls(path, rows, conflicts)

    def _index(self, root: Path, keys: list[str]) -> dict[str, list[str]]:
        """Every way a row can name a file of `root`: its path, its path without the extension, and both with
        the folder's own name in front (rows written relative to the folder above)."""
        index: dict[str, list[str]] = {}
        for key in keys:
            stem = str(PurePosixPath(key).with_suffix(""))
            for name in {key, stem, f"{root.name}/{key}", f"{root.name}/{stem}"}:
                index.setdefault(name, []).append(key)
        return index

    def label(self, root: Path, keys: list[str]) -> list[tuple[str, str]]:
        index = self._index(root, keys)
        found: dict[str, tuple[str, str]] = {}
        for value, (label, _) in self.rows.items():
            matches = index.get(_normal(value), [])
            if len(matches) == 1 and matches[0] not in found:
                found[matches[0]] = (label, NO_LABEL)
                self.used.add(value)
            elif len(matches) > 1:
                self.used.add(value)
                for key in matches:
                    found[key] = (NO_LABEL, f"{self.path.name}: {value!r} matches {len(matches)} files; give the extension")
            elif matches:  # a second row for the same file under another spelling
                self.used.add(value)
                if found[matches[0]][0] != label:
                    found[matches[0]] = (NO_LABEL, f"{self.path.name} gives it two labels")
        for value, why in self.conflicts.items():
            for key in index.get(_normal(value), []):
                found[key] = (NO_LABEL, why)
                self.used.add(value)
        return [found.get(key, (NO_LABEL, f"no row in {self.path.name}")) for key in keys]

    def matches_any(self, root: Path, keys: list[str]) -> bool:
        index = self._index(root, keys)
        return any(_normal(value) in index for value in self.rows)

    def no_match(self, root: Path) -> None:
        """Raise the one-line error for a labels file none of whose rows names an image of `root`."""
        first = ", ".join(list(self.rows)[:3])
        raise ImgclsError(f"{self.path}: none of its {len(self.rows)} rows names an image in {root} (first: {first}); "
                          "the path column holds paths relative to that folder, or ids (file names without the "
                          "extension); check data.path_column and data.dir")

    def unused(self) -> list[tuple[str, str]]:
        """(value, reason) of every row that named no image: a missing file, or a typo in the path column."""
        where = str(self.path.resolve())
        return [(where, f"line {line}: {value!r} names no image") for value, (_, line) in self.rows.items()
                if value not in self.used]


def _normal(value: str) -> str:
    return value.replace("\\", "/").removeprefix("./")


def read_table(path: Path, key: str = "data.labels_file") -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header and the (line number, fields) of a CSV or TSV file; the delimiter is sniffed (, ; or tab)."""
    path = Path(path)
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
