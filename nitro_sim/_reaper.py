"""Stopping without waiting: SIGTERM now, the exits awaited and reaped by one long-lived thread.

Rules:

- :meth:`Reaper.stop_later` sends SIGTERM to each process's group at once, in the caller's thread, and hands
  the processes over; the caller goes on (a function-scoped test's teardown does not wait for kms-sim's
  shutdown). The reaper's thread reaps each one as it ends and, :data:`STOP_TIMEOUT_S` after the handover,
  SIGKILLs what is left, as :meth:`nitro_sim.procs.ProcessGroup.stop_all` would. Then it runs the job's
  ``then`` (removing the home the processes wrote to, once none of them runs).
- Until it is reaped, a process stays under the safety net (:mod:`nitro_sim._net`): an interrupted run
  stops it like any other.
- At most :data:`MAX_PENDING_STOPS` jobs wait at once; one more waits in :meth:`Reaper.stop_later` for room,
  so a fast loop of tests cannot pile up stopping servers.
- :meth:`Reaper.close` waits until every job is done (a session's end), then raises the first error a
  job met (its ``then`` failing, or a stop), if any.
- The thread only signals, waits and reaps: it starts no process (a parent-death signal follows the thread
  that forked, so a process started from here would die with this thread).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from nitro_sim._net import STOP_TIMEOUT_S
from nitro_sim._process import Process

__all__ = ["MAX_PENDING_STOPS", "REAP_POLL_S", "Reaper"]

#: Jobs (one owner's processes each) handed over and not done yet, at most.
MAX_PENDING_STOPS = 8
#: How often the thread looks at what it waits for (it runs beside tests: a slow look costs no one).
REAP_POLL_S = 0.02


@dataclass(kw_only=True)
class _Job:
    processes: list[Process]
    deadline: float
    then: Callable[[], None] | None
    done: bool = field(default=False)


class Reaper:
    """One thread that finishes the stops it is handed (module docstring); :meth:`close` at the end."""

    def __init__(self) -> None:
        self._jobs: list[_Job] = []
        self._errors: list[Exception] = []
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def stop_later(self, processes: Iterable[Process], *, then: Callable[[], None] | None = None) -> None:
        """SIGTERM to each process's group now; reap them, then run ``then``, in the reaper's thread."""
        owned = list(processes)
        for process in owned:
            process.signal_group(signal.SIGTERM)
        job = _Job(processes=owned, deadline=time.monotonic() + STOP_TIMEOUT_S, then=then)
        with self._changed:
            if self._closed:
                raise RuntimeError("the reaper is closed")
            while len(self._jobs) >= MAX_PENDING_STOPS:
                self._changed.wait()
            self._jobs.append(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="nitro-sim-reaper", daemon=True)
                self._thread.start()
            self._changed.notify_all()

    def pending(self) -> int:
        """Jobs handed over and not done yet."""
        with self._changed:
            return len(self._jobs)

    def close(self) -> None:
        """Wait until every job is done; then raise the first error one met."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()
        if self._errors:
            raise self._errors[0]

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._jobs and not self._closed:
                    self._changed.wait()
                if not self._jobs:
                    return
                jobs = list(self._jobs)
            for job in jobs:
                self._advance(job)
            with self._changed:
                self._jobs = [job for job in self._jobs if not job.done]
                self._changed.notify_all()
                if self._jobs:
                    self._changed.wait(REAP_POLL_S)  # a new job, or the next look

    def _advance(self, job: _Job) -> None:
        """Reap what has ended (everything, with SIGKILL, past the deadline); ``then`` once none is left."""
        late = time.monotonic() >= job.deadline
        for process in list(job.processes):
            if late or not process.running():
                try:
                    process.stop(timeout=0.0)  # SIGKILL to the group if it still runs; reaped
                except Exception as error:  # kept for close(); the other jobs go on
                    self._errors.append(error)
                job.processes.remove(process)
        if job.processes:
            return
        job.done = True
        if job.then is not None:
            try:
                job.then()
            except Exception as error:  # kept for close()
                self._errors.append(error)
