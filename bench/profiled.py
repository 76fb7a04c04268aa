"""``python -m bench.profiled OUT SCRIPT [ARGS...]``: run a console script under CPU-time profilers.

- Main thread: cProfile with ``time.thread_time`` (CPU of that thread only, so neither time spent
  preempted on a shared core nor other threads' work is charged to the running call). It starts
  disabled; SIGUSR1 enables it and SIGUSR2 disables it, so exactly the measured round is profiled.
- Threads the program starts: each profiled for its whole life (OUT.threads), see _profile_threads.
- The files are written however the script ends, short of SIGKILL. uvicorn re-raises the SIGTERM it
  caught, which would kill the process first: stop a profiled server with SIGINT, which unwinds.
"""

from __future__ import annotations

import cProfile
import pstats
import runpy
import signal
import sys
import threading
import time

#: Profiles of the threads the program started (each covers its thread's whole life; see _profile_threads).
_THREAD_PROFILES: list[cProfile.Profile] = []


def _profile_threads() -> None:
    """Profile every thread started from now on, for its whole life, in thread CPU time.

    A profiler only sees the thread that enabled it, and a server that serves each connection on its own
    thread (nsm-sim) does its work where the signal-switched main-thread profiler cannot look. Such a
    connection lives as long as its client, so the orchestrator divides by the calls the client made.
    """
    original = threading.Thread.run

    def run(self: threading.Thread) -> None:
        profiler = cProfile.Profile(time.thread_time)
        profiler.enable()
        try:
            original(self)
        finally:
            profiler.disable()
            _THREAD_PROFILES.append(profiler)

    threading.Thread.run = run  # type: ignore[method-assign]


def main() -> int:
    if len(sys.argv) < 3:
        print("usage: python -m bench.profiled OUT SCRIPT [ARGS...]", file=sys.stderr)
        return 2
    out, script, *args = sys.argv[1:]
    profiler = cProfile.Profile(time.thread_time)
    signal.signal(signal.SIGUSR1, lambda *_: profiler.enable())
    signal.signal(signal.SIGUSR2, lambda *_: profiler.disable())
    sys.argv = [script, *args]
    _profile_threads()
    code = 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 0
    except KeyboardInterrupt:
        code = 0
    finally:
        profiler.disable()
        profiler.dump_stats(out)
        finished = [p for p in list(_THREAD_PROFILES) if p.getstats()]
        if finished:
            stats = pstats.Stats(finished[0])
            for p in finished[1:]:
                stats.add(p)
            stats.dump_stats(out + ".threads")
    return code


if __name__ == "__main__":
    sys.exit(main())
