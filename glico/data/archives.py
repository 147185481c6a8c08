"""Archives of image folders (.tar, .tar.gz, .tar.xz, .tar.bz2, .zip), extracted once into a cache.

An archive is extracted into ``<cache>/archives/<name>-<key>``, where ``key`` hashes the archive's absolute
path, size and modification time: a changed archive gets a fresh folder, an unchanged one is never extracted
twice. Extraction writes into a temporary folder beside the target and renames it into place, so an
interrupted extraction leaves nothing that looks complete, and two processes extracting at once both end up
with one complete folder.

Members are checked before anything is written: an absolute name or a ``..`` component (path traversal) makes
the whole archive refused; links, devices and other special members are skipped with a warning (an image
folder needs none of them).
"""
from __future__ import annotations

import bz2
import gzip
import hashlib
import logging
import lzma
import os
import shutil
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO

from tqdm.auto import tqdm

from glico.data.types import DataError, MissingDataError

log = logging.getLogger(__name__)

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tbz2")
ZIP_SUFFIXES = (".zip",)
ARCHIVE_SUFFIXES = TAR_SUFFIXES + ZIP_SUFFIXES

_CHUNK = 1 << 20
_SMALL_FILE = 16 << 20  # larger members are streamed to disk, never held in memory


def default_cache_dir() -> Path:
    """The cache root used when none is given: ``$GLICO_CACHE_DIR``, else ``$XDG_CACHE_HOME/glico``, else
    ``~/.cache/glico``.

    Returns:
        The path (it may not exist yet).
    """
    if os.environ.get("GLICO_CACHE_DIR"):
        return Path(os.environ["GLICO_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "glico"


def archive_kind(path: Path) -> str | None:
    """``"tar"`` or ``"zip"`` according to the file name's ending, or None for any other name."""
    name = path.name.lower()
    if name.endswith(TAR_SUFFIXES):
        return "tar"
    if name.endswith(ZIP_SUFFIXES):
        return "zip"
    return None


def archive_stem(path: Path) -> str:
    """The archive's file name without its archive ending (``data.tar.xz`` -> ``data``)."""
    name = path.name
    for suffix in sorted(ARCHIVE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or "archive"
    return name


def archive_cache_key(path: Path) -> str:
    """A short hash of the archive's absolute path, size and modification time (ns)."""
    st = path.stat()
    raw = f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode()
    return hashlib.sha256(raw).hexdigest()[:16]


def _safe_relpath(name: str, archive: Path) -> tuple[str, ...]:
    """The member's path relative to the extraction root, as parts; empty for the root itself.

    Raises DataError for absolute names and ``..`` components: an archive that tries to write outside its
    folder is refused as a whole, not partially extracted.
    """
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or (parts and len(parts[0]) == 2 and parts[0][1] == ":") or ".." in parts:
        raise DataError(
            f"archive {archive} has a member {name!r} that points outside the extraction folder "
            f"(absolute path or '..'); refusing to extract it. Members must be relative paths inside the archive"
        )
    return tuple(p for p in parts if p not in ("", "."))


class _Writer:
    """Writes members under ``dest``, creating each folder once.

    Creating tens of thousands of small files dominates extraction time. (Writing them from a few threads
    was measured slower here: the file system serialises file creation and the threads add CPU time.)
    """

    def __init__(self, dest: Path, collect: Callable[[str, bytes], None] | None, collect_root: Path):
        self.dest = str(dest)
        self.collect = collect
        self.collect_root = str(collect_root)
        self.made: set[str] = {self.dest}
        self.files = 0

    def mkdir(self, rel: tuple[str, ...]) -> str:
        path = os.path.join(self.dest, *rel)
        if path not in self.made:
            os.makedirs(path, exist_ok=True)
            self.made.add(path)
        return path

    def write(self, rel: tuple[str, ...], src: IO[bytes], size: int) -> None:
        target = os.path.join(self.mkdir(rel[:-1]), rel[-1])
        with open(target, "wb") as out:
            if size > _SMALL_FILE or self.collect is None:
                # streamed; large files are not collected either (readers read them from disk)
                shutil.copyfileobj(src, out, _CHUNK)
            else:
                data = src.read()
                out.write(data)
                self.collect(os.path.join(self.collect_root, *rel), data)
        self.files += 1


_COMPRESSED = ((b"\x1f\x8b", gzip.open), (b"\xfd7zXZ\x00", lzma.open), (b"BZh", bz2.open))


def _open_decompressed(archive: Path) -> IO[bytes]:
    """The archive's tar stream, decompressed according to its first bytes (not its name)."""
    with open(archive, "rb") as f:
        head = f.read(6)
    for magic, opener in _COMPRESSED:
        if head.startswith(magic):
            return opener(archive, "rb")
    return open(archive, "rb")


def _extract_tar(archive: Path, writer: _Writer) -> None:
    # Stream mode reads the compressed file once, front to back; random-access mode would scan the
    # whole archive for its index first and then seek (slow for .xz with tens of thousands of members).
    with _open_decompressed(archive) as raw, tarfile.open(fileobj=raw, mode="r|") as tar, \
            tqdm(desc=f"extracting {archive.name}", unit=" files", disable=None, leave=False, mininterval=0.5) as bar:
        for member in tar:
            rel = _safe_relpath(member.name, archive)
            if not rel:
                continue
            if member.isdir():
                writer.mkdir(rel)
            elif member.isfile():
                src = tar.extractfile(member)
                assert src is not None
                writer.write(rel, src, member.size)
                bar.update()
            else:
                log.warning("archive %s: skipping %s (a link or special file, not a regular file)",
                            archive, member.name)
        # Read on to the end, so the decompressor checks its end-of-stream marker and checksum: tarfile stops
        # at the first end-of-archive block, and a truncated .tar.xz would otherwise pass for a shorter archive.
        while raw.read(_CHUNK):
            pass


def _extract_zip(archive: Path, writer: _Writer) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        rels = [_safe_relpath(info.filename, archive) for info in infos]  # check every name before writing
        for info, rel in tqdm(list(zip(infos, rels, strict=True)), desc=f"extracting {archive.name}", unit=" files",
                              disable=None, leave=False, mininterval=0.5):
            if not rel:
                continue
            if info.is_dir():
                writer.mkdir(rel)
            else:
                with zf.open(info) as src:
                    writer.write(rel, src, info.file_size)


def extract_archive(archive: Path, cache_root: Path | None = None, *,
                    collect: Callable[[str, bytes], None] | None = None) -> Path:
    """Extract ``archive`` once into the cache and return the extracted folder.

    Args:
        archive: a .tar, .tar.gz/.tgz, .tar.xz/.txz, .tar.bz2/.tbz2 or .zip file.
        cache_root: the cache root (default :func:`default_cache_dir`); the folder is
            ``<cache_root>/archives/<name>-<key>``.
        collect: called as ``collect(path, data)`` with each file's final path and contents when the archive
            is extracted now (not when the folder exists already); lets a caller decode the files from memory
            instead of reading them back.

    Returns:
        The extracted folder. If it already exists (same path, size and modification time), it is returned
        without reading the archive.

    Raises:
        MissingDataError: the archive does not exist.
        DataError: unsupported file name ending, a file that is not a readable archive of its kind (corrupt,
            truncated, wrong extension), or a member that would escape the folder.
    """
    archive = Path(archive).expanduser()
    if not archive.is_file():
        raise MissingDataError(f"archive {archive} does not exist (or is not a file)")
    kind = archive_kind(archive)
    if kind is None:
        raise DataError(
            f"{archive} is not a supported archive: the name must end in one of {', '.join(ARCHIVE_SUFFIXES)}"
        )
    root = Path(cache_root).expanduser() if cache_root is not None else default_cache_dir()
    parent = root / "archives"
    final = parent / f"{archive_stem(archive)}-{archive_cache_key(archive)}"
    if final.is_dir():
        log.info("using %s, extracted earlier from %s", final, archive)
        return final
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=parent))
    log.info("extracting %s into %s", archive, final)
    # The collector sees final paths, valid once the temporary folder is renamed into place.
    writer = _Writer(tmp, collect, collect_root=final)
    try:
        if kind == "tar":
            _extract_tar(archive, writer)
        else:
            _extract_zip(archive, writer)
    except DataError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except (tarfile.TarError, zipfile.BadZipFile, lzma.LZMAError, zlib.error, EOFError, OSError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and exc.errno is not None:
            raise  # a real system error (disk full, permissions), not a malformed archive
        raise DataError(
            f"{archive} could not be read as a {kind} archive ({type(exc).__name__}: {exc}); "
            f"it may be corrupt, truncated, or have the wrong extension "
            f"(accepted: {', '.join(ARCHIVE_SUFFIXES)})"
        ) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    n = writer.files
    if n == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"archive {archive} contains no files")
    try:
        os.rename(tmp, final)
    except OSError:
        # Another process finished the same extraction first: keep its folder.
        shutil.rmtree(tmp, ignore_errors=True)
        if not final.is_dir():
            raise
    log.info("extracted %d files from %s", n, archive)
    return final
