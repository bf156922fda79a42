"""The command ``joulecast measure`` runs, as a process: started so that it ends with its
parent.

On Linux, :func:`spawn` starts it through a small launcher (``_launch.py``, run isolated)
that asks the kernel for SIGTERM when its parent ends (``PR_SET_PDEATHSIG``) and then becomes
the command: a ``joulecast measure`` killed by SIGKILL takes its command down, and the
command may clean up. The request covers the command only, not the processes it starts
(they get their own signal where the command passes it on), and Linux sends it when the
*thread* that started the command ends: start it from a thread that outlives it. Elsewhere
(macOS, Windows) the command is started plainly and nothing ends it with its parent.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

_LAUNCHER = Path(__file__).with_name("_launch.py")


def parent_death_signal() -> bool:
    """Whether :func:`spawn` can have a command signalled when its parent ends (Linux, with
    an interpreter to run the launcher)."""
    return (
        sys.platform.startswith("linux")
        and bool(sys.executable)
        and os.access(sys.executable, os.X_OK)
        and _LAUNCHER.is_file()
    )


def spawn(argv: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """Start ``argv`` with environment ``env`` as a child of this process, to get SIGTERM
    when this process ends where the platform allows (:func:`parent_death_signal`).

    The child stays in this process's process group: Ctrl-C, Ctrl-Z and a terminal's input
    reach it as they reach any command started from a shell.

    Raises:
        OSError: the command cannot be started (as :class:`subprocess.Popen` raises it).
    """
    args = [str(a) for a in argv]
    if not parent_death_signal():
        return subprocess.Popen(args, env=dict(env))
    read_fd, write_fd = os.pipe()
    try:
        launcher = [sys.executable, "-I", "-S", str(_LAUNCHER), str(os.getpid()), str(write_fd)]
        child = subprocess.Popen([*launcher, *args], env=dict(env), pass_fds=(write_fd,))
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        failed = pipe.read()  # EOF once the command runs: the exec closed the pipe
    if failed:
        child.wait()
        code = int(failed)
        raise OSError(code, os.strerror(code), args[0])
    return child


def group_alive(pgid: int) -> bool:
    """Whether process group ``pgid`` has a process left (one this process may not signal
    counts)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
