"""Start a command that dies with the process that started it (Linux): run as a script.

``python -I -S _launch.py PARENT_PID ERROR_FD COMMAND...`` (what
:func:`joulecast.processes.spawn` runs) asks the kernel for SIGTERM when its parent ends
(``PR_SET_PDEATHSIG``), checks that the parent has not ended already (before the request, so
no signal would come), then becomes the command (``execvp``: same process, and the request
holds across it). If the command cannot be started, the errno goes to ``ERROR_FD`` as
decimal text and the exit status is 127.

Only the standard library, and no joulecast: the interpreter starts isolated, so nothing but
this file runs between the fork and the command. Setting the request in the parent's fork
(``subprocess``'s ``preexec_fn``) would run Python code in the copy of a process whose other
threads (the sampler, the writer) may hold locks at the fork.
"""

from __future__ import annotations

import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
DEATH_SIGNAL = signal.SIGTERM


def main(argv: list[str]) -> None:
    """Set the parent-death signal, then become ``argv[2:]`` (see the module docstring)."""
    parent, error_fd, command = int(argv[0]), int(argv[1]), argv[2:]
    os.set_inheritable(error_fd, False)  # closed by the exec: EOF tells the parent it worked
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(DEATH_SIGNAL), 0, 0, 0)
    except (ImportError, OSError, AttributeError):  # no prctl here: the command runs without
        pass
    if os.getppid() != parent:  # it ended before the request: no signal will come
        os.kill(os.getpid(), DEATH_SIGNAL)
    # Python ignores these at start-up; an ignored signal stays ignored across exec, so the
    # command gets them back as subprocess's restore_signals would give them.
    for name in ("SIGPIPE", "SIGXFZ", "SIGXFSZ"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        os.write(error_fd, str(exc.errno or 0).encode())
        os._exit(127)


if __name__ == "__main__":
    main(sys.argv[1:])
