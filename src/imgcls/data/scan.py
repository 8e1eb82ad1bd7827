"""Pre-flight scan: every file of a data folder checked once, in parallel, and cached.

TensorFlow's decoders fail in the middle of an epoch without naming the file,
ignore EXIF orientation and drop alpha without compositing it. Pillow can
tell, per file and by content (never by extension), what a file really is and
what is wrong with it. The scan asks Pillow once per file and keeps the answer:

    check_file     one file -> FileCheck: an image (format, mode, size, content
                   hash), a bad file (the reason), or not an image (ignored)
    scan_files     files -> their FileChecks and what TensorFlow reads for each, from
                   the cache where size and mtime match, the rest checked in parallel
    imgcls.data.folders.scan_folder
                   data/<class>/**/* -> FolderScan, through scan_files

TensorFlow reads these files as they are: JPEG in RGB or grey (baseline or
progressive) without EXIF rotation; PNG without transparency (8 or 16 bit RGB,
8 bit or less grey, palette); 24-bit BMP; GIF without transparency (first
frame). Every other image (WebP, TIFF, CMYK JPEG, 16-bit grey PNG, alpha or
transparent palette PNG, EXIF-rotated photos, ...) is converted once by Pillow
into an 8-bit PNG: EXIF orientation applied, transparency composited on white
(BACKGROUND), 16-bit values scaled to 8 bit. So `imgcls.data.pipeline.load_image` only
ever reads files it decodes correctly.

The verdicts and converted images are cached per data folder (`imgcls.data.scan_cache`).
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imgcls.data.scan_cache import ScanCache, cache_folder
from imgcls.errors import first_line
from imgcls.files import atomic_file, is_utf8

MAX_PIXELS = 178_956_970  # Pillow's own decompression-bomb limit (about 13,000 x 13,000)
MAX_FILE_BYTES = 512 * 2**20  # a larger file is a named skip: no photo is that large, and a video or disk image would be read whole
BACKGROUND = (255, 255, 255)  # transparent pixels are composited on white
PROGRESS_MIN_FILES = 300  # a progress bar when at least this many files need checking
SHOW_BAD = 10  # bad files named in messages; the rest are counted

# A file with one of these extensions is meant to be an image: if it does not decode it is a bad file.
IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".bmp", ".dib", ".gif",
    ".webp", ".tif", ".tiff", ".heic", ".heif", ".avif",
})
# Any other file counts as an image only when its content is one of these formats (they have
# unmistakable signatures, so a text or CSV file is never taken for one); otherwise it is ignored.
SNIFFED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "GIF", "BMP", "WEBP", "TIFF"})
ORIENTATION = 0x0112  # the EXIF tag that says how a photo must be rotated for display


@dataclass
class FileCheck:
    """What one file is. scan.json stores these fields, in this order, per file."""

    kind: str  # "image", "bad" or "other" (not an image: ignored)
    reason: str = ""  # bad files: what is wrong
    format: str = ""  # Pillow's name for the content: JPEG, PNG, WEBP, ...
    mode: str = ""  # Pillow's pixel mode: RGB, L, RGBA, P, CMYK, I;16, ...
    width: int = 0
    height: int = 0
    sha1: str = ""  # content hash: duplicate detection, and the converted file's name
    convert: str = ""  # why TensorFlow cannot read the file as it is ("" = it can)


# --------------------------------------------------------------------------- one file


def check_file(path: Path, converted_dir: Path | None = None) -> FileCheck:
    """Decode `path` fully with Pillow and say what it is; convert it into `converted_dir` when TF needs that.

    Only regular files are opened (a named pipe would block, a device never
    end), and only up to MAX_FILE_BYTES: memory stays bounded by one decoded image.
    """
    expected = path.suffix.lower() in IMAGE_EXTENSIONS
    problem = _not_a_plain_image_file(path, expected)
    if problem is not None:
        return problem
    try:
        return _check_image(path, expected, converted_dir)
    except OSError as exc:  # gone, or unreadable, between the stat and the read
        return FileCheck("bad", reason=f"unreadable ({exc.strerror or first_line(exc, 80)})") if expected else FileCheck("other")


def _not_a_plain_image_file(path: Path, expected: bool) -> FileCheck | None:
    """A FileCheck for what must not be opened (not a regular file, empty, too large, a name that is not UTF-8), else None."""
    def bad(reason: str) -> FileCheck:
        return FileCheck("bad", reason=reason) if expected else FileCheck("other")

    if not is_utf8(path.name):
        return FileCheck("bad", reason="the file name is not valid UTF-8: rename it")
    try:
        info = os.stat(path)  # follows a symlink: what it points to is what counts
    except OSError as exc:
        return bad(f"unreadable ({exc.strerror})")
    if not stat.S_ISREG(info.st_mode):
        return bad(f"not a regular file ({_file_type(info.st_mode)})")
    if info.st_size == 0:
        return bad("empty file (0 bytes)")
    if info.st_size > MAX_FILE_BYTES:
        return bad(f"too large ({info.st_size / 2**20:,.0f} MiB; the limit is {MAX_FILE_BYTES / 2**20:,.0f} MiB a file)")
    return None


def _check_image(path: Path, expected: bool, converted_dir: Path | None) -> FileCheck:
    def keep_converted(image, check: FileCheck) -> None:
        if converted_dir is not None:
            _write_converted(image, converted_dir / f"{check.sha1}.png")

    with open(path, "rb") as f:
        return _check_stream(f, _tail(path), expected, path.suffix.lower(), keep_converted)


def check_bytes(contents: bytes, name: str = "") -> tuple[FileCheck, bytes]:
    """`check_file` for an image in memory (an upload): its FileCheck, and the bytes TensorFlow reads for it
    (the 8-bit PNG it is converted to when TensorFlow would get it wrong; b"" for a bad image).

    The same checks as a file's: content, not the name; Pillow's pixel limit
    (a decompression bomb is refused from its header, before any decoding). `name`: its file name, if it has one.
    """
    if not contents:
        return FileCheck("bad", reason="empty (0 bytes)"), b""
    converted: list[bytes] = []

    def keep_converted(image, check: FileCheck) -> None:
        converted.append(_converted_png(image))

    check = _check_stream(io.BytesIO(contents), contents[-64:], True, Path(name).suffix.lower(), keep_converted)
    if check.kind != "image":
        return check, b""
    return check, converted[0] if converted else contents


def _check_stream(f, tail: bytes, expected: bool, suffix: str, keep_converted) -> FileCheck:
    """The check of an open binary file: Pillow reads the header, then every pixel; `keep_converted(image, check)`
    is called for an image TensorFlow cannot read as it is."""
    from PIL import Image, UnidentifiedImageError

    _setup_pillow()
    try:
        with Image.open(f) as image:  # Pillow reads the header now, the pixels in load()
            if not expected and image.format not in SNIFFED_FORMATS:
                return FileCheck("other")
            if image.width * image.height > MAX_PIXELS:
                return FileCheck("bad", reason=f"too large ({image.width}x{image.height} pixels; the limit is {MAX_PIXELS:,})")
            check = FileCheck("image", format=image.format, mode=image.mode, width=image.width, height=image.height)
            check.convert = conversion_reason(image, tail)
            if not check.convert and image.format in ("JPEG", "MPO"):
                # Still decodes every byte (a truncated file fails), but at 1/8 scale: much faster.
                image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
            check.sha1 = _sha1(f)
            if check.convert:
                keep_converted(image, check)
            return check
    except UnidentifiedImageError:
        if suffix in (".heic", ".heif"):
            return FileCheck("bad", reason="HEIC photo: install pillow-heif to read it, or convert it to JPEG")
        return FileCheck("bad", reason="not an image (unknown content)") if expected else FileCheck("other")
    except Image.DecompressionBombError:
        return FileCheck("bad", reason=f"too large (over the limit of {MAX_PIXELS:,} pixels)")
    except OSError as exc:
        message = first_line(exc, 80)
        what = "truncated" if "truncated" in message else "unreadable"
        return FileCheck("bad", reason=f"{what} ({message})") if expected else FileCheck("other")
    except Exception as exc:  # Pillow raises assorted errors (SyntaxError, ValueError, ...) on broken files
        return FileCheck("bad", reason=f"unreadable ({type(exc).__name__})") if expected else FileCheck("other")


def _sha1(f) -> str:
    """The content hash of an open file, read in chunks (a whole file never sits in memory)."""
    f.seek(0)
    digest = hashlib.sha1()
    for chunk in iter(lambda: f.read(1 << 20), b""):
        digest.update(chunk)
    return digest.hexdigest()


def _tail(path: Path, size: int = 64) -> bytes:
    with open(path, "rb") as f:
        f.seek(max(0, os.fstat(f.fileno()).st_size - size))
        return f.read()


def _file_type(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"


def conversion_reason(image, tail: bytes) -> str:
    """Why TensorFlow's decoders would get this image wrong ("" = they read it correctly)."""
    fmt, mode = image.format, image.mode
    if image.getexif().get(ORIENTATION, 1) != 1:
        return "EXIF rotation"
    if "transparency" in image.info or mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return "transparency"
    if mode.startswith("I;16") or mode == "I":
        return f"16-bit {fmt}"
    if fmt in ("JPEG", "MPO"):
        if mode not in ("RGB", "L"):
            return f"{mode} JPEG"
        # Only reached when Pillow was told to accept truncated files (ImageFile.LOAD_TRUNCATED_IMAGES);
        # TF never does, so such a file goes through Pillow.
        return "" if tail.rstrip(b"\0\r\n ").endswith(b"\xff\xd9") else "JPEG without end marker"
    if fmt == "PNG" and mode in ("RGB", "L", "1", "P"):
        return ""
    if (fmt == "BMP" and mode == "RGB") or fmt == "GIF":
        return ""
    return f"{mode} {fmt}" if fmt in ("PNG", "BMP") else fmt


def _write_converted(image, target: Path) -> None:
    """Save `image` as the 8-bit RGB or grey PNG that TF will read instead of the original."""
    if target.exists():  # named by content hash: an identical file was converted already
        return
    with atomic_file(target) as tmp:
        _converted_image(image).save(tmp, format="PNG", compress_level=1)


def _converted_png(image) -> bytes:
    """The converted image as PNG bytes, for an image in memory."""
    buffer = io.BytesIO()
    _converted_image(image).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _converted_image(image):
    """What TensorFlow reads instead of `image`: EXIF orientation applied, 8-bit RGB or grey."""
    from PIL import ImageOps

    return _to_8bit(ImageOps.exif_transpose(image))


def _to_8bit(image):
    """RGB or L, 8 bits per channel: alpha composited on BACKGROUND, 16-bit and float scaled, not clipped."""
    from PIL import Image

    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        # 16-bit (Pillow's convert("L") would clip these at 255 instead of scaling).
        values = np.asarray(image, dtype=np.float64)
        return Image.fromarray(np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8), "L")
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        values = values * 255.0 if values.size and values.max() <= 1.0 else values
        return Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8), "L")
    if "transparency" in image.info or mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    if mode in ("L", "1"):
        return image.convert("L")
    return image.convert("RGB")


_pillow_ready = False


def _setup_pillow() -> None:
    """Silence warnings about what the scan handles itself; read HEIC photos when pillow-heif is installed."""
    global _pillow_ready
    if _pillow_ready:
        return
    from PIL import Image

    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    warnings.filterwarnings("ignore", message="Palette images with Transparency", category=UserWarning)
    try:
        from pillow_heif import register_heif_opener  # optional: iPhone photos

        register_heif_opener()
    except ImportError:
        pass
    _pillow_ready = True


def _check_files(paths: list[str], keys: list[str], cache: ScanCache, what: str = "files") -> tuple[list[FileCheck], int]:
    """A FileCheck per path (from the cache when size and mtime match, else checked in parallel), and the cache hits."""
    checks: list[FileCheck | None] = [None] * len(paths)
    todo: list[tuple[int, os.stat_result]] = []
    for i, (path, key) in enumerate(zip(paths, keys)):
        try:
            info = os.stat(path)
        except OSError:  # gone, a dangling or looping link: check_file says which, without the cache
            checks[i] = check_file(Path(path))
            continue
        checks[i] = cache.get(key, info)
        if checks[i] is None:
            todo.append((i, info))
    if todo:
        cache.converted.mkdir(parents=True, exist_ok=True)
        # Threads: Pillow releases the GIL while it decodes, so files are checked in parallel.
        with ThreadPoolExecutor() as pool, _progress(len(todo), what) as advance:
            results = pool.map(lambda job: check_file(Path(paths[job[0]]), cache.converted), todo)
            for (i, info), check in zip(todo, results):
                checks[i] = check
                cache.put(keys[i], info, check)
                advance()
    return checks, len(paths) - len(todo)


@contextmanager
def _progress(total: int, what: str):
    """A rich progress bar on stderr for long scans; nothing for short ones or when stderr is not a terminal."""
    from rich.console import Console

    console = Console(stderr=True)
    if total < PROGRESS_MIN_FILES or not console.is_terminal:
        yield lambda: None
        return
    from rich.markup import escape
    from rich.progress import MofNCompleteColumn, Progress

    with Progress(*Progress.get_default_columns(), MofNCompleteColumn(), console=console, transient=True) as progress:
        task = progress.add_task(f"checking {escape(what)}", total=total)
        yield lambda: progress.advance(task)


@dataclass
class ScannedFile:
    """One file as the scan found it: its check, and what TensorFlow reads for it (the file or its converted PNG)."""

    path: str
    check: FileCheck
    readable: str

    @property
    def is_image(self) -> bool:
        return self.check.kind == "image"

    @property
    def problem(self) -> str:
        """Why this file cannot be used: a bad file's reason, or 'not an image'."""
        return self.check.reason or ("not an image" if self.check.kind == "other" else "")


def scan_files(paths: list, root: Path | None = None, prune: bool = False) -> tuple[list[ScannedFile], int]:
    """Every file checked once (the cache answers where size and mtime match), and how many the cache answered.

    `root`: the data folder the files are in; they are keyed by their path
    relative to it in its own cache, the one `scan_folder` fills. Without it
    (files given to `imgcls predict`) the user cache is keyed by absolute path.
    `prune`: the files are all of `root`'s, so entries of vanished files go.
    """
    paths = [str(p) for p in paths]
    cache = ScanCache(cache_folder(root))
    if root is None:
        keys = [str(Path(p).resolve()) for p in paths]
    else:
        keys = [Path(os.path.relpath(p, root)).as_posix() for p in paths]
    checks, cached = _check_files(paths, keys, cache, what=f"{len(paths):,} files" + (f" in {root}" if root else ""))
    cache.save(keep=set(keys) if prune else None)
    return [ScannedFile(p, c, cache.readable_path(p, c)) for p, c in zip(paths, checks)], cached
