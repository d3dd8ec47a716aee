"""Output folders: which folders a command may write, and how it writes them.

The rule, for every command that writes a folder (`qute train`, `qute build`, `qute monitor`,
`qute-codegen generate`):

- The folder is made in a staging folder beside the target (`.NAME.xxxxxxxx`) and renamed into
  place when complete, so a failure, Ctrl-C or SIGTERM leaves the target as it was and no staging
  folder behind.
- A target that does not exist, or an empty folder, is written. A folder that this same command
  made (it carries the command's marker file) is replaced only with --force. Anything else (a
  file, someone else's folder, even with --force) is refused.
- The current folder, any of its parents, `/`, the home folder and its parents are never targets.
- Refusals and unwritable places are one line (OutputError: exit status 2), raised by `check`
  before the command starts any long work, with nothing touched.

It lives in codegen, which never imports TensorFlow or qute, because both command-line tools use it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


class OutputError(Exception):
    """An output path the command must not or cannot write: one line on stderr, exit status 2."""


@dataclass(frozen=True)
class Kind:
    """The folders one command writes."""

    command: str  # who made the folder, for messages: "qute train"
    marker: str  # file dropped in every folder the command writes: ".qute-run"
    # Recognises folders written before markers existed, from the files only that command writes.
    legacy: Callable[[Path], bool] = lambda folder: False

    def made(self, folder: Path) -> bool:
        return (folder / self.marker).is_file() or self.legacy(folder)


def missing(path: str | Path, want: str = "folder") -> str:
    """Why `path` is not the `want` ("folder" or "file") a command reads: what is there instead."""
    path = Path(path)
    if want == "folder" and path.is_file():
        return "is a file, not a folder"
    if want == "file" and path.is_dir():
        return "is a folder, not a file"
    return f"is not a {want}" if path.exists() else "does not exist"


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def check(target: str | Path, kind: Kind, force: bool = False) -> Path:
    """Raises OutputError unless `kind`'s command may write the folder `target`; touches nothing.

    Returns the target with `..` and trailing separators normalised away.
    """
    shown = str(target)
    target = Path(os.path.normpath(target))
    real, cwd, home = _real(target), _real(Path.cwd()), _real(Path.home())
    where = ("the root folder" if real == real.parent else
             "the current folder" if real == cwd else
             "the home folder" if real == home else
             "a parent of the current folder" if cwd.is_relative_to(real) else
             "a parent of the home folder" if home.is_relative_to(real) else None)
    if where:
        raise OutputError(f"{shown} is {where}; {kind.command} writes a folder of its own: give a new one, "
                          f"e.g. {Path(shown) / 'out'}")
    if target.is_symlink():
        raise OutputError(f"{shown} is a symbolic link; give the folder itself ({real}) or another one")
    if target.exists():
        if not target.is_dir():
            raise OutputError(f"{shown} is a file, not a folder; choose another output folder")
        try:
            empty = not any(target.iterdir())
        except OSError as e:
            raise OutputError(f"cannot read {shown} ({e.strerror}); choose another output folder") from None
        if not empty and not kind.made(target):
            raise OutputError(f"{shown} exists and was not made by {kind.command} (it only replaces its own "
                              f"folders, which hold {kind.marker}); choose another output folder")
        if not empty and not force:
            raise OutputError(f"{shown} already exists (made by {kind.command}); pass --force to replace it, "
                              "or choose another output folder")
    writable(target, shown)
    return target


def writable(target: str | Path, shown: str | None = None) -> None:
    """Raises OutputError unless `target` (a file or a folder) can be created: its parent exists
    and takes new entries, or the nearest existing ancestor is a folder that does."""
    target = Path(target)
    shown = shown or str(target)
    place = target.parent
    while not place.exists():
        place = place.parent
    if not place.is_dir():
        raise OutputError(f"cannot create {shown}: {place} is a file, not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".qute-probe-", dir=place))
    except OSError as e:
        raise OutputError(f"cannot create {shown}: {place} is not writable ({e.strerror})") from None


@contextmanager
def staging(target: str | Path, kind: Kind, force: bool = False) -> Iterator[Path]:
    """Yields an empty staging folder beside `target`; when the block succeeds, it gets `kind`'s
    marker and replaces `target`. On any exception, KeyboardInterrupt included, it is deleted, and
    so are the parent folders made for it."""
    shown = target
    target = check(target, kind, force)
    made = []
    place = target.parent
    while not place.exists():
        made.append(place)
        place = place.parent
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0700 would make the finished folder private
    except OSError as e:
        _remove_empty(made)
        raise OutputError(f"cannot create {shown} ({e.strerror})") from None
    try:
        yield tmp
        (tmp / kind.marker).write_text(f"made by {kind.command}; `{kind.command} --force` may replace this folder\n")
        check(target, kind, force)  # again: something may have appeared there during the work
        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(made)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _remove_empty(folders: list[Path]) -> None:
    for f in folders:  # deepest first
        try:
            f.rmdir()
        except OSError:
            break


def replace_dir(tmp: Path, target: Path) -> None:
    """Puts the finished folder `tmp` where `target` is: the old one is renamed aside first, so
    the target is never a mix of the two, and the old one comes back if the new one cannot go in."""
    if not target.exists():
        os.replace(tmp, target)
        return
    old = target.with_name(f".{target.name}.old-{secrets.token_hex(4)}")
    os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
