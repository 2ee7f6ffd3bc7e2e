"""A run's output folder: staged beside the target, swapped in whole.

A run writes everything (streamed part files, then the merged tables) into a staging
folder next to the output folder, ``.<name>.servesim-staging-<pid>``, on the same file
system. When all tables are complete the staging folder and the output folder trade
places in one atomic exchange (Linux ``renameat2(RENAME_EXCHANGE)``; elsewhere two
renames in a row) and the previous run's folder is removed. So the output folder holds
either the previous run's complete set of tables or this run's, never a mix, and never
a table the new run did not write (``write_steps = false`` leaves no old
``steps.parquet`` behind). Files in the folder that servesim did not write are carried
over into the new one.

A run that is killed leaves only its staging folder; the next run into the same
folder removes staging folders whose process is gone. Problems with the folder itself
(a file in the way, no permission, a name too long, a read-only file system) raise
:class:`OutputError` naming the folder, before the simulation starts.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
from pathlib import Path

STAGING = ".servesim-staging-"
OWN_SUFFIXES = (".parquet", ".json", ".png")
"""Files of these kinds in an output folder are servesim's (tables, the JSON summary,
figures of the previous run); anything else is the user's and is kept."""


class OutputError(OSError):
    """The output folder cannot be written; the message names it and says why."""


def _reason(e: OSError) -> str:
    if e.errno == errno.ENAMETOOLONG:
        return "a name in the path is too long"
    return e.strerror or str(e)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False if this
    system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP if hasattr(errno, "ENOTSUP") else errno.EINVAL):
        return False
    raise OSError(err, os.strerror(err), str(b))


class RunOutput:
    """The staging folder of one run into ``out_dir`` (see module docstring)."""

    def __init__(self, out_dir: str | Path) -> None:
        self.target = Path(out_dir)
        self.staging = None
        try:
            self._prepare(str(self.target))
        except OSError as e:
            if isinstance(e, OutputError):
                raise
            raise OutputError(f"{self.target}: cannot use as the output folder: {_reason(e)}") from None

    def _prepare(self, where: str) -> None:
        if self.target.exists() and not self.target.is_dir():
            raise OutputError(f"{where}: exists and is not a folder; choose another --out")
        if self.target.is_symlink() and not self.target.exists():
            raise OutputError(f"{where}: is a broken symbolic link")
        parent = self.target.resolve().parent if self.target.exists() else self.target.absolute().parent
        if str(parent).startswith(("/proc", "/sys", "/dev")):
            raise OutputError(f"{where}: under {str(parent).split('/')[1] and '/' + str(parent).split('/')[1]}, "
                              "which is not a place for files; choose another --out")
        blocking = next((p for p in [parent, *parent.parents] if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            raise OutputError(f"{where}: {blocking} is a file, not a folder")
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"{where}: cannot create its parent folder {parent}: {_reason(e)}") from None
        if not parent.is_dir():
            raise OutputError(f"{where}: its parent {parent} is not a folder")
        self.parent = parent
        name = self.target.resolve().name if self.target.exists() else self.target.name
        if not name or name in (".", ".."):
            raise OutputError(f"{where}: not a folder name servesim can replace; name the folder")
        self.name = name
        self._remove_stale()
        self.staging = parent / f".{name}{STAGING}{os.getpid()}"
        try:
            if self.staging.exists():
                shutil.rmtree(self.staging)
            self.staging.mkdir()
        except OSError as e:
            raise OutputError(f"{where}: cannot write in {parent}: {_reason(e)}") from None

    @property
    def part_dir(self) -> Path:
        path = self.staging / ".parts"
        path.mkdir(exist_ok=True)
        return path

    def _remove_stale(self) -> None:
        """Staging folders of runs into this folder whose process is gone."""
        prefix = f".{self.name}{STAGING}"
        try:
            entries = list(self.parent.iterdir())
        except OSError:
            return
        for entry in entries:
            if entry.name.startswith(prefix):
                pid = entry.name[len(prefix):].split(".")[0]
                if pid.isdigit() and not _alive(int(pid)):
                    shutil.rmtree(entry, ignore_errors=True)
        if self.target.is_dir():  # part folders of servesim versions that staged inside the target
            for entry in self.target.glob(".parts-*"):
                shutil.rmtree(entry, ignore_errors=True)

    def commit(self) -> Path:
        """Swap the staged tables in as the output folder; returns it."""
        shutil.rmtree(self.staging / ".parts", ignore_errors=True)
        target = self.parent / self.name
        try:
            if target.is_dir():
                for entry in target.iterdir():  # the user's own files come along
                    if not (entry.is_file() and entry.suffix in OWN_SUFFIXES) and not entry.name.startswith(".parts-"):
                        os.replace(entry, self.staging / entry.name)
                if not _exchange(self.staging, target):
                    old = self.parent / f".{self.name}{STAGING}{os.getpid()}.old"
                    os.replace(target, old)
                    os.replace(self.staging, target)
                    self.staging = old
            else:
                os.replace(self.staging, target)
                self.staging = None
        except OSError as e:
            raise OutputError(f"{target}: cannot replace it: {_reason(e)}") from None
        self.abort()  # after an exchange the staging path holds the previous run
        return target

    def abort(self) -> None:
        """Remove the staging folder (a failed or interrupted run)."""
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None
