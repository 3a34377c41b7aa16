"""Tiny launcher for cold-start runs: `python -I -S spawn.py PROGRAM ARGS...`.

Forks from this small interpreter (not from the big benchmark process: Linux keeps the pre-exec
RSS in ru_maxrss), execs PROGRAM, waits, and writes `SPAWN <wall ns> <maxrss KiB> <exit code>` to
stderr. The wall time covers fork + exec + the whole child run.
"""

import os
import sys
import time

t0 = time.perf_counter_ns()
pid = os.fork()
if pid == 0:
    try:
        os.execv(sys.argv[1], sys.argv[1:])
    finally:
        os._exit(127)
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter_ns() - t0
sys.stderr.write(f"\nSPAWN {wall} {ru.ru_maxrss} {os.waitstatus_to_exitcode(status)}\n")
