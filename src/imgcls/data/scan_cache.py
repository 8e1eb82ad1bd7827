"""The scan's cache: each file's verdict kept per data folder, so a rescan only checks what changed.

    <data folder>/.imgcls_cache/scan.json        verdicts keyed by path, size and mtime
    <data folder>/.imgcls_cache/converted/*.png  converted images, named by content hash

The folder is hidden, so it is never taken for a class. When the data folder
is read-only, and for files outside any data folder (`imgcls predict`), the
user cache folder is used instead: $IMGCLS_CACHE_DIR, else
$XDG_CACHE_HOME/imgcls, else ~/.cache/imgcls. Delete any of them at any time.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import astuple
from pathlib import Path
from typing import TYPE_CHECKING

from imgcls.files import is_utf8, write_text

if TYPE_CHECKING:
    from imgcls.data.scan import FileCheck

CACHE_DIR_NAME = ".imgcls_cache"
CACHE_VERSION = 1  # bump when the verdicts or conversions change, so old caches are ignored


def user_cache_dir() -> Path:
    """$IMGCLS_CACHE_DIR, else $XDG_CACHE_HOME/imgcls, else ~/.cache/imgcls."""
    if os.environ.get("IMGCLS_CACHE_DIR"):
        return Path(os.environ["IMGCLS_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.environ.get("LOCALAPPDATA") or Path.home() / ".cache"
    return Path(base) / "imgcls"


def cache_folder(root: Path | None) -> Path:
    """<root>/.imgcls_cache when it can be written, else a folder in the user cache (root None: predict's)."""
    if root is not None:
        local = Path(root) / CACHE_DIR_NAME
        try:
            local.mkdir(exist_ok=True)
            if os.access(local, os.W_OK):
                return local
        except OSError:
            pass
    if root is None:
        return user_cache_dir() / "files"
    resolved = str(Path(root).resolve())
    return user_cache_dir() / "folders" / f"{Path(resolved).name}-{hashlib.sha1(resolved.encode()).hexdigest()[:12]}"


class ScanCache:
    """scan.json (FileChecks keyed by path, size and mtime) and the converted images of one folder."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.converted = self.folder / "converted"
        self.entries: dict[str, list] = {}
        self.changed = False
        try:
            raw = json.loads((self.folder / "scan.json").read_text(encoding="utf-8"))
            if raw.get("version") == CACHE_VERSION:
                self.entries = raw["files"]
        except (OSError, ValueError, KeyError, AttributeError):
            pass  # no cache yet, or a damaged one: everything is checked again

    def get(self, key: str, stat: os.stat_result) -> FileCheck | None:
        entry = self.entries.get(key)
        if entry is None or entry[:2] != [stat.st_size, stat.st_mtime_ns]:
            return None
        from imgcls.data.scan import FileCheck

        check = FileCheck(*entry[2:])
        if check.convert and not os.path.exists(self.readable_path(key, check)):
            return None  # its converted file was deleted: check (and convert) again
        return check

    def put(self, key: str, stat: os.stat_result, check: FileCheck) -> None:
        if not is_utf8(key):
            return  # a name that is not UTF-8 cannot go into scan.json; checking it again is cheap
        self.entries[key] = [stat.st_size, stat.st_mtime_ns, *astuple(check)]
        self.changed = True

    def readable_path(self, path: str | Path, check: FileCheck) -> str:
        """What TensorFlow reads for this image: the file itself, or its converted PNG."""
        return os.path.join(self.converted, f"{check.sha1}.png") if check.convert else str(path)

    def save(self, keep: set[str] | None = None) -> None:
        """Write scan.json if anything changed; `keep` drops entries (and converted files) of vanished files."""
        if keep is not None:
            stale = set(self.entries) - keep
            for key in stale:
                del self.entries[key]
            self.changed |= bool(stale)
            self._drop_unused_conversions()
        if not self.changed:
            return
        try:
            write_text(self.folder / "scan.json", json.dumps({"version": CACHE_VERSION, "files": self.entries},
                                                             ensure_ascii=False, separators=(",", ":")))
            self.changed = False
        except OSError:
            pass  # a cache that cannot be written only costs time on the next run

    def _drop_unused_conversions(self) -> None:
        if not self.converted.is_dir():
            return
        used = {f"{entry[8]}.png" for entry in self.entries.values() if entry[9]}
        for path in self.converted.iterdir():
            if path.name not in used:
                path.unlink(missing_ok=True)
