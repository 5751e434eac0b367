"""One writer per checkpoint folder: an advisory lock, released when its process ends.

:class:`FolderLock` takes ``flock(LOCK_EX | LOCK_NB)`` on the file ``.lock`` in the folder
and writes its process id there. The kernel releases the lock when the process ends, however
it ends (``kill -9`` included), so a folder is never left locked by a dead run; the file
itself stays and is reused. The lock is advisory: it keeps out other :class:`FolderLock`\\ s
(every ``fit`` with a ``checkpoint_dir``), not a process that writes the files directly.
Where ``fcntl`` is missing (Windows) there is no lock.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks
    fcntl = None  # type: ignore[assignment]  # the module, or None where it is missing

from .. import checks

__all__ = ["FolderLock", "FolderLockedError"]

LOCK_NAME = ".lock"


class FolderLockedError(RuntimeError):
    """Another process (or another open run in this one) holds the folder's lock.

    ``folder`` is the folder, ``pid`` the holder's process id as it recorded it (``None``
    if unknown). The message names both and says what to do.
    """

    def __init__(self, message: str, folder: Path, pid: int | None):
        super().__init__(message)
        self.folder, self.pid = folder, pid


class FolderLock:
    """An exclusive, advisory lock on ``folder``, held until :meth:`release` (or the end of
    a ``with`` block, or of the process).

    Refuses with :class:`FolderLockedError` when another holder has it; ``who`` names the
    folder's role in that message (``"fit: checkpoint_dir"``).

    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with FolderLock(folder):
    ...     try:
    ...         FolderLock(folder, "fit: checkpoint_dir")
    ...     except FolderLockedError as err:
    ...         print(err.pid == os.getpid(), "is in use by another run" in str(err))
    True True
    >>> FolderLock(folder).release()  # free again
    """

    def __init__(self, folder: str | os.PathLike, who: str = "checkpoint.FolderLock"):
        self.folder = checks.path(folder, who)
        self._file = open(self.folder / LOCK_NAME, "a+b")  # held until release()
        if fcntl is None:
            return
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = self._holder()
            self._file.close()
            holder = "another process" if pid is None else f"process {pid}"
            raise FolderLockedError(
                f"{who} {str(self.folder)!r} is in use by another run ({holder} holds "
                f"{str(self.folder / LOCK_NAME)!r}); wait for that run to end, or give "
                "another folder",
                self.folder,
                pid,
            ) from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"{os.getpid()}\n".encode())
        self._file.flush()

    def _holder(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            self._file.seek(0)
            return int(self._file.read(32).decode().strip())
        return None

    @property
    def held(self) -> bool:
        """Whether this lock is still held (not yet released)."""
        return not self._file.closed

    def release(self) -> None:
        """Give the lock up (closing the file releases it); a second call does nothing."""
        self._file.close()

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
