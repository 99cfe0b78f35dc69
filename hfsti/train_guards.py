"""What keeps a training run from losing work: the run-folder lock, the stop signals, the
pre-flight scan of the training images and the resumable CSV log (used by ``hfsti.train``).
"""

from __future__ import annotations

import csv
import os
import signal
import socket
import threading
from collections.abc import Iterable
from pathlib import Path

from PIL import Image

from hfsti.checkpoint import atomic_path

LOCK_NAME = "train.lock"


def first_line(err: BaseException) -> str:
    """``"Type: first sentence"`` of an exception, for one-line messages."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0].split('. ')[0]}" if text else type(err).__name__


class RunLock:
    """An ``O_EXCL`` lock file in the run folder holding ``"<pid> <host>"``.

    A second run into the same folder is refused while the holder lives. A lock left by a dead
    process of this host is stale and is taken over; one from another host (a shared file
    system) cannot be checked and is always respected.
    """

    def __init__(self, out: Path, enabled: bool = True) -> None:
        self.path, self.enabled, self.held = out / LOCK_NAME, enabled, False

    def __enter__(self) -> RunLock:
        if not self.enabled:
            return self
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._live_owner()
                if owner is None:
                    self.path.unlink(missing_ok=True)
                    continue
                raise ValueError(
                    f"out: {self.path.parent} is in use by another training run ({owner}); "
                    f"if no run is using it, delete {self.path}"
                ) from None
            except OSError as err:
                raise ValueError(
                    f"out: cannot write to {self.path.parent} ({err.strerror or err})"
                ) from None
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()} {socket.gethostname()}\n")
            self.held = True
            return self
        raise ValueError(f"out: could not take the lock {self.path} (another run took it)")

    def _live_owner(self) -> str | None:
        """A description of the lock's holder, or None when the lock is stale."""
        try:
            pid_text, host = self.path.read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            return "unreadable lock file"  # possibly being written right now: respect it
        if host != socket.gethostname():
            return f"pid {pid} on {host}"
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # alive, owned by another user
        return f"pid {pid}"

    def __exit__(self, *exc) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


class StopSignals:
    """SIGINT and SIGTERM become a request to stop at the end of the current step.

    The first signal sets ``signum`` and puts the previous handlers back, so a second Ctrl-C
    interrupts at once. Installed only from the main thread (signals cannot be caught
    elsewhere); restored on exit.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self.previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def _handle(self, signum: int, frame) -> None:
        self.signum = signum
        self._restore()

    def _restore(self) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        self.previous = {}

    def __exit__(self, *exc) -> None:
        self._restore()


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: a Ctrl-C (sent to the whole process group) or a SIGTERM
    must reach only the main process, which stops cleanly; a killed worker would abort it."""
    for s in StopSignals.SIGNALS:
        signal.signal(s, signal.SIG_IGN)


def scan_images(pairs: Iterable[tuple[Path, Path]]) -> None:
    """Check every (frame, mask) file before training: it opens as an image, passes PIL's
    ``verify`` (for PNG every chunk's CRC, so truncation and corruption are found; for JPEG the
    header only) and the frame and mask sizes agree. Raises ValueError listing the bad files."""
    bad = []
    for frame, mask in pairs:
        sizes = []
        for path in (frame, mask):
            try:
                with Image.open(path) as im:
                    sizes.append(im.size)
                    im.verify()
            except Exception as err:  # PIL raises many types for a damaged file
                bad.append(f"{path} ({first_line(err)})")
        if len(sizes) == 2 and sizes[0] != sizes[1]:
            bad.append(
                f"{mask} is {sizes[1][0]}x{sizes[1][1]} but {frame} {sizes[0][0]}x{sizes[0][1]}"
            )
    if bad:
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise ValueError(
            f"data: {len(bad)} unreadable or mismatched image(s), found before training: "
            + "; ".join(bad[:5])
            + more
        )


class TrainLog:
    """CSV of (step, epoch, loss, lr, grad_norm, seconds), one row per logged step.

    Started fresh (``resume_step`` None) or continued: rows past ``resume_step`` (logged after
    the checkpoint being resumed, by a run that then died) are dropped, so each step appears
    once. The file is rewritten atomically; rows are then appended one write each.
    """

    FIELDS = ("step", "epoch", "loss", "lr", "grad_norm", "seconds")

    def __init__(self, path: Path, enabled: bool, resume_step: int | None) -> None:
        self.path, self.enabled = path, enabled
        if not enabled:
            return
        rows = []
        if resume_step is not None and path.is_file():
            with path.open(newline="") as f:
                for row in csv.DictReader(f):
                    try:
                        if int(row["step"]) <= resume_step:
                            rows.append([row[k] for k in self.FIELDS])
                    except (KeyError, TypeError, ValueError):
                        continue  # a row torn by a crash
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
            csv.writer(f).writerows([self.FIELDS, *rows])

    def write(self, *row) -> None:
        if self.enabled:
            with self.path.open("a", newline="") as f:
                csv.writer(f).writerow(row)
