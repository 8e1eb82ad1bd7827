"""How a run was made, as its config.yaml records it: versions, the data folder's git commit.

Recorded so a run can be understood, audited and repeated on another machine.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import imgcls

# What decides a run's numbers (what `pip freeze` would say about them).
PACKAGES = ("tensorflow", "keras", "numpy", "pillow", "pydantic", "h5py")


def versions() -> dict[str, Any]:
    """imgcls, TensorFlow and Keras as imported (else installed), Python, and the installed versions of PACKAGES."""
    from importlib import metadata

    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass  # e.g. tensorflow-cpu or tf-nightly instead of tensorflow
    loaded = {name: getattr(sys.modules.get(name), "__version__", None) for name in ("tensorflow", "keras")}
    return {"version": imgcls.__version__, "tensorflow": loaded["tensorflow"] or packages.get("tensorflow"),
            "keras": loaded["keras"] or packages.get("keras"), "python": sys.version.split()[0], "packages": packages}


def data_git_commit(folder: Path) -> dict[str, Any] | None:
    """The commit of the git repository holding the data folder, and whether its files differ from it; None outside git."""

    def git(*args):
        return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=30, check=True).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        dirty = bool(git("status", "--porcelain", "--", ".").strip())
    except (OSError, subprocess.SubprocessError):  # no git, not a repository, no commit yet
        return None
    return {"commit": commit, "dirty": dirty}
