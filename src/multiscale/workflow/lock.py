"""The run-folder lock of ``multiscale cycle``: one driver (and its mdrun) per output root."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from ..errors import MultiscaleError
from .state import now_iso

__all__ = ["RootLock"]


class RootLock:
    """An exclusive lock on ``ROOT/.lock`` (flock; released automatically when the process dies).

    The lock's file descriptor is inheritable and mdrun is started with it (see
    :func:`multiscale.gromacs.runner.mdrun`): the lock is held until the driver *and* its mdrun
    are gone, so a second ``cycle`` can never start an mdrun on the files of a running one.  If
    the driver was killed, its mdrun gets SIGTERM (parent-death signal), writes a checkpoint and
    stops; a new ``cycle`` waits up to ``wait_orphans_s`` for that."""

    def __init__(self, root: Path, wait_orphans_s: float = 60.0):
        self.path = root / ".lock"
        self.fd: int | None = None
        self.wait_orphans_s = wait_orphans_s

    def __enter__(self):
        import fcntl

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise MultiscaleError(f"cannot write into the output folder {self.path.parent} ({exc.strerror}): "
                                  "set 'output' in sim.yaml to a writable folder with a shorter path") from None
        t0 = time.monotonic()
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holders = _lock_holders(self.path)
                driver = _recorded_pid(self.fd)
                orphans = driver is not None and not _alive(driver)
                if orphans and time.monotonic() - t0 < self.wait_orphans_s:
                    time.sleep(0.2)  # the mdrun of a killed driver is writing its checkpoint
                    continue
                os.close(self.fd)
                self.fd = None
                who = f"pid {', '.join(map(str, holders))}" if holders else "unknown pid"
                if orphans:
                    raise MultiscaleError(f"{self.path.parent} is still in use by {who}, left by a killed `multiscale "
                                          "cycle`: wait until it ends (or kill it), then run again") from None
                raise MultiscaleError(f"another `multiscale cycle` is running on {self.path.parent} ({who}): "
                                      "wait for it to finish or stop it first") from None
            except OSError:
                break  # file systems without flock (some NFS/Lustre mounts): run unlocked
        os.ftruncate(self.fd, 0)
        os.lseek(self.fd, 0, os.SEEK_SET)
        os.write(self.fd, f"pid {os.getpid()} on {socket.gethostname()} since {now_iso()}\n".encode())
        os.set_inheritable(self.fd, True)  # mdrun children hold the lock too
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _recorded_pid(fd: int) -> int | None:
    """The driver pid written into the lock file (same host only), or None."""
    try:
        text = os.pread(fd, 200, 0).decode(errors="replace")
    except OSError:
        return None
    parts = text.split()
    if len(parts) >= 4 and parts[0] == "pid" and parts[1].isdigit() and parts[3] == socket.gethostname():
        return int(parts[1])
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _lock_holders(path: Path) -> list[int]:
    """PIDs with ``path`` open (Linux /proc, own processes; empty elsewhere)."""
    target = str(path.resolve())
    out = []
    try:
        pids = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return []
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    out.append(int(pid))
                    break
        except OSError:
            continue
    return sorted(out)
