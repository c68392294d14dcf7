"""One writer per run directory: a second run on the same ``--out`` is refused while the first one runs.

``OUT/.llm4rec.lock`` holds the running process's pid and host, created with ``O_EXCL`` so two runs cannot
both take it. It is removed when the run ends, however it ends (an exception, Ctrl-C). A lock left by a run
that was killed (its pid no longer runs on this host) is stale and is taken over with a warning; a lock from
another host cannot be checked, so the error says which file to delete.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path

from llm4rec.errors import Llm4recError
from llm4rec.io import process_alive

log = logging.getLogger(__name__)
LOCK_FILE = ".llm4rec.lock"


class RunDirectoryBusy(Llm4recError):
    """Another llm4rec run writes into this directory."""


class RunLock:
    def __init__(self, directory: str | Path, command: str = "llm4rec") -> None:
        self.directory, self.command = Path(directory), command
        self.path = self.directory / LOCK_FILE
        self.held = False

    def _holder(self) -> dict:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}  # being written, or damaged: treated as held by an unknown run below

    def acquire(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                pid, host = holder.get("pid"), holder.get("host")
                if isinstance(pid, int) and host == me["host"] and not process_alive(pid):
                    log.warning("%s: taking over the lock of run %d, which no longer runs", self.directory, pid)
                    self.path.unlink(missing_ok=True)
                    continue
                who = f"pid {pid} on {host}" if pid else "an unknown process"
                raise RunDirectoryBusy(
                    f"{self.directory} is in use by another run ({holder.get('command', 'llm4rec')}, {who}): wait for "
                    f"it to finish or choose another --out (if no such run exists, delete {self.path})"
                ) from None
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                json.dump(me, file)
            self.held = True
            return

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
