"""Cage: first process of a sandbox whose kernel is forked from the kernel template (kernel_template.py).

Run by bubblewrap as the sandbox's command, stdlib only:

    python -I -S _sandbox_anchor.py <fifo> <uid>

It takes the kernel's uid (-1: keeps its own), as the kernel's folders belong to it, waits until the forked kernel writes its pid (as this PID namespace numbers it) into the FIFO,
then lives exactly as long as that kernel. When it exits, bwrap exits, and the sandbox's PID
namespace takes every process the student started along: the kernel manager sees the kernel's
death as the death of the process it launched, as with a kernel that bwrap started itself.
"""
import os
import select
import sys


def main(fifo: str, uid: int) -> None:
    if uid >= 0:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    with open(fifo, "rb") as f:   # blocks until the kernel opens the FIFO; EOF if it never writes
        line = f.readline()
    try:
        pid = int(line)
    except ValueError:
        sys.exit("the forked kernel did not report its pid")
    try:
        handle = os.pidfd_open(pid)
    except ProcessLookupError:
        sys.exit("the forked kernel ended before it started")
    select.select([handle], [], [])   # readable once the kernel has exited


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
