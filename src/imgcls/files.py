"""Files and folders written so that no reader ever sees half of one.

    with atomic_file(path) as tmp: ...      write tmp; it is renamed onto path when the block succeeds
    with atomic_folder(path) as tmp: ...    fill the folder tmp; it replaces path when the block succeeds

Both build beside their target (same file system, so the rename is atomic)
under a hidden name, and delete what they built when the block fails, Ctrl-C
included. Everything imgcls writes goes through one of them: run files,
best.keras, the per-epoch backup, exports, the scan cache, converted images,
plots and the `latest` pointer.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import yaml


@contextmanager
def atomic_file(target: Path) -> Iterator[Path]:
    """A temporary path beside `target` (same suffix) that is renamed onto it when the block succeeds."""
    target = Path(target)
    # Not mkstemp: its files are private (0600); these should get the usual umask.
    tmp = target.parent / f".{target.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}{target.suffix}"
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if os.path.lexists(tmp):  # lexists: the `latest` pointer is a symlink
            tmp.unlink()


@contextmanager
def atomic_folder(target: Path) -> Iterator[Path]:
    """A new folder beside `target`; when the block succeeds it replaces `target` (an older one is deleted then)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        yield building
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(building, 0o777 & ~mask)  # mkdtemp's folder is private; the result is an ordinary folder
        _replace_folder(building, target)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise


def _replace_folder(building: Path, target: Path) -> None:
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        os.replace(target, old)
    try:
        os.replace(building, target)
    except OSError:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_text(path: Path, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_yaml(path: Path, data: Any) -> None:
    write_text(path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rows of dicts as CSV; the columns are every key, in the order first seen."""
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    with atomic_file(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader (no Python objects), where a key given twice in one mapping is an error, not a silent override."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml(text: str) -> Any:
    """YAML text parsed with the safe loader; a duplicate key raises yaml.YAMLError like any other mistake."""
    return yaml.load(text, Loader=_UniqueKeyLoader)


def check_writable(path: Path, option: str, folder: bool = False) -> None:
    """Fail before any work when `path` (a file, or with `folder` a folder) cannot be written, naming `option`.

    A folder given for a file, a missing parent, a read-only place: known
    now, they would otherwise throw a computed result away.
    """
    from imgcls.errors import ImgclsError

    path = Path(path)
    if not folder and path.is_dir():
        raise ImgclsError(f"{option} {path}: that is a folder; give a file name")
    if folder and path.exists() and not path.is_dir():
        raise ImgclsError(f"{option} {path}: that is a file; give a folder")
    place = path if folder and path.is_dir() else path.parent
    while not place.exists() and place != place.parent:  # a folder to be made: its nearest existing ancestor
        place = place.parent
    if not folder and not path.parent.is_dir():
        raise ImgclsError(f"{option} {path}: the folder {path.parent} does not exist")
    try:
        with tempfile.NamedTemporaryFile(dir=place, prefix=".imgcls-write-test."):
            pass  # os.access says yes to root on a read-only file system
    except OSError as exc:
        raise ImgclsError(f"{option} {path}: cannot write in {place} ({exc.strerror})") from None


def is_utf8(name: str) -> bool:
    """Whether a name from the file system is valid UTF-8 (Python keeps undecodable bytes as surrogates)."""
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False
