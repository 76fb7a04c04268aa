"""``python -m bench.profiled OUT SCRIPT [ARGS...]``: run a console script under a CPU-time profiler.

The profiler (cProfile with ``time.process_time``, so time spent runnable-but-preempted on a shared core is
not charged to whatever call was running) starts disabled: SIGUSR1 enables it, SIGUSR2 disables it, so the
orchestrator profiles exactly the measured round and not the program's start-up. The profile is written to
OUT however the script ends, short of SIGKILL (uvicorn re-raises the SIGTERM it caught, which would kill the
process before anything is written, so stop a profiled server with SIGINT: that unwinds normally).
"""

from __future__ import annotations

import cProfile
import runpy
import signal
import sys
import time


def main() -> int:
    if len(sys.argv) < 3:
        print("usage: python -m bench.profiled OUT SCRIPT [ARGS...]", file=sys.stderr)
        return 2
    out, script, *args = sys.argv[1:]
    profiler = cProfile.Profile(time.process_time)
    signal.signal(signal.SIGUSR1, lambda *_: profiler.enable())
    signal.signal(signal.SIGUSR2, lambda *_: profiler.disable())
    sys.argv = [script, *args]
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
    return code


if __name__ == "__main__":
    sys.exit(main())
