"""What a command may write: the rule every command checks, in one place, before it writes anything.

Each command declares what it reads (files, and folders it reads files from) and what it will
write (files, and folders it manages as a whole, like a run's checkpoints), and ``check`` refuses
with one line, before a byte is written, when:

1. something written overlaps something read: an output is an input, lies inside an input
   folder, or an input lies inside a folder the command writes (paths resolved, symlinks
   followed, so no link or ``..`` hides an input);
2. two outputs are one file;
3. an output exists and the command did not make it. How a command knows what it made:

   * an output folder chosen with ``--out`` (translate, test, plot, prepare-faces) lists every
     file the command wrote into it in ``OUT/.unpaired-made``, one ``sha256  path`` line per
     file (``sha256sum -c`` reads it). A listed file whose content is unchanged is the command's
     to replace; any other file there is the user's, and stays untouched;
   * a run directory's own folders (RUN/test, RUN/eval, RUN/plots) are unpaired's as a whole,
     unless one is a link to a folder elsewhere: that folder is treated as an --out folder;
   * a run directory is ``unpaired train``'s once it wrote its config.yaml (``RunDir.config_is_ours``);
   * ``export`` replaces only a graph it exported, ``import-official`` only weights it imported
     (both recognised by the metadata they write);
4. an output cannot be written at all: a part of its path is a file, or its folder is not
   writable.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from .errors import UserError
from .files import write_text_atomic, writing
from .run import RunDir

MADE = ".unpaired-made"


def check(reads: Iterable[Path | str], *, files: Iterable[Path | str] = (), folders: Iterable[Path | str] = (),
          ours: Callable[[Path], bool] = lambda path: False) -> None:
    """Refuse (one UserError) the plan to write ``files`` and ``folders`` while reading ``reads``.

    A read path that does not exist names the files it is the prefix of (a TF checkpoint
    ``model-1000`` is read from ``model-1000.index`` ...), so its folder counts as read.
    ``ours(path)`` says whether an existing output was made by this command (see the module
    docstring); an existing file or folder it does not claim is refused.
    """
    inputs = [(Path(p), _real(p) if Path(p).exists() else _real(p).parent) for p in reads]
    outputs = [(Path(p), _real(p), False) for p in files] + [(Path(p), _real(p), True) for p in folders]
    seen: dict[str, Path] = {}
    for given, real, is_folder in outputs:
        _check_location(given, real, is_folder)
        for source, source_real in inputs:
            _check_overlap(given, real, source, source_real)
        key = os.path.normcase(str(real))
        if key in seen:
            raise UserError(f"two outputs would be the same file: {seen[key]} and {given}")
        seen[key] = given
        if real.exists() and not ours(given):
            raise UserError(f"{given} exists and was not written by this command: move it away or choose another "
                            f"location (unpaired never replaces a file it did not make)")


def _real(path: Path | str) -> Path:
    return Path(path).resolve()


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _check_overlap(given: Path, real: Path, source: Path, source_real: Path) -> None:
    if real == source_real:
        named = "" if given == source else f" ({source})"
        raise UserError(f"{given} is an input of this command{named}: writing it would destroy it; "
                        f"choose another output location")
    if _inside(real, source_real):
        raise UserError(f"{given} lies inside {source}, which this command reads: choose an output location "
                        f"outside it")
    if _inside(source_real, real):
        raise UserError(f"the input {source} lies inside {given}, which this command writes: move the input "
                        f"or choose another output location")


def _check_location(given: Path, real: Path, is_folder: bool) -> None:
    """Refuse an output whose path runs through a file, a file output that is a folder, an unwritable folder."""
    if real.exists() and real.is_dir() != is_folder:
        kind = "a folder" if real.is_dir() else "a file"
        raise UserError(f"{given} is {kind}; give {'a folder' if is_folder else 'a file name'}")
    parent = given.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"cannot write {given}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot write into {parent} (no permission, or a read-only file system): "
                        f"choose another location")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Made:
    """The files a command wrote into an output folder, as recorded in FOLDER/.unpaired-made.

    A folder inside a run directory (its test, eval or plots folder, whether named by default or
    with --out) is unpaired's as a whole, so every file there is ours and nothing is recorded;
    ``whole`` says so for a run's folder of a release whose config.yaml has no header (not
    when that folder is a link, which may lead to the user's files).
    """

    def __init__(self, folder: Path | str, *, whole: bool = False):
        self.folder = Path(folder)
        real = _real(self.folder)
        # a run's folder that is a link leads elsewhere, to files that may be the user's
        self.whole = ((whole and not self.folder.is_symlink())
                      or any(RunDir(above).config_is_ours() for above in (real, *real.parents)))
        self.record = self.folder / MADE
        self._hashes = {} if self.whole else self._read()

    def _read(self) -> dict[str, str]:
        """relative path -> sha256 of the latest record of each file (a line that does not parse is ignored)."""
        try:
            lines = self.record.read_text(encoding="utf-8", errors="replace").splitlines()
        except (FileNotFoundError, NotADirectoryError):  # none yet, or no folder (which check() reports)
            return {}
        except OSError as exc:
            raise UserError(f"cannot read {self.record} ({exc.strerror or exc})") from None
        hashes = {}
        for line in lines:
            digest, sep, name = line.partition("  ")
            if sep and len(digest) == 64:
                hashes[name] = digest
        if len(lines) > 2 * len(hashes) + 1000:  # rewritten often: keep one line per file
            write_text_atomic(self.record, "".join(f"{d}  {n}\n" for n, d in hashes.items()))
        return hashes

    def _name(self, path: Path) -> str | None:
        try:
            return _real(path).relative_to(_real(self.folder)).as_posix()
        except ValueError:
            return None

    def owns(self, path: Path) -> bool:
        """Whether the existing ``path`` is a file this command wrote here, unchanged since."""
        if self.whole:
            return True
        name = self._name(path)
        return name in self._hashes and Path(path).is_file() and sha256(Path(path)) == self._hashes[name]

    def add(self, path: Path) -> None:
        """Record ``path``, just written, as ours."""
        name = self._name(path)
        if self.whole or name is None:
            return
        self._hashes[name] = digest = sha256(Path(path))
        with writing(self.record), open(self.record, "a", encoding="utf-8") as fh:
            fh.write(f"{digest}  {name}\n")
