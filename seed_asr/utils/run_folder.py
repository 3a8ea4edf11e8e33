"""One live process per run folder: an exclusive ``flock`` on ``<run folder>/.run.lock``.

Two trainings in one folder would interleave their metrics, overwrite each other's checkpoints and leave
a config that describes only one of them. The kernel releases a ``flock`` when its process ends, however
it ends (an exception, SIGKILL, an out-of-memory kill), so a crashed run never leaves its folder locked;
the file stays and is reused. On a shared file system the lock holds across nodes where the mount
supports ``flock`` (NFS with lockd, Lustre mounted with ``-o flock``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

LOCK_FILE = ".run.lock"


class RunFolderInUse(RuntimeError):
    """Another live process holds the run folder."""


@contextlib.contextmanager
def hold_run_folder(folder: str | Path) -> Iterator[None]:
    """Hold ``folder`` (created when missing) for the block; the lock file names the holder.

    Raises:
        RunFolderInUse: another live process holds it (named in the message: pid, host, start time).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    with path.open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise RunFolderInUse(
                f"run folder {folder} is in use by {holder} ({path}): two runs in one folder would mix their "
                "checkpoints, logs and config records. Choose another hydra.run.dir, or wait for that run to "
                "end (a run that crashed holds nothing)."
            ) from None
        lock.truncate(0)
        started = datetime.now().isoformat(timespec="seconds")
        lock.write(f"pid {os.getpid()} on {socket.gethostname()} since {started}\n")
        lock.flush()
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
