"""Run: the grading kernel's manager and client (jupyter_client's), starting it in its cage.

SandboxedKernelManager starts each kernel through _kernel_stage.py, inside bubblewrap (cage.py)
unless sandbox=False, in its memory cgroup, or forks it from the batch's kernel template
(kernel_template.py) into that sandbox; SandboxedKernelClient is ready as soon as the kernel
has answered, without jupyter_client's fixed waits.
"""
import asyncio
import json
import os
import sys
import time
from queue import Empty

from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import AsyncKernelManager
from traitlets import Bool, DottedObjectName, Dict, Int, Type, Unicode, default
import zmq.asyncio

from dlcourse.grading.cage import STAGE, bwrap_prefix, clean_environment
from dlcourse.grading.cgroups import JOIN
from dlcourse.grading.kernel_template import ANCHOR, TemplateError, find_anchor, fork_kernel


class SandboxedKernelClient(AsyncKernelClient):
    """jupyter_client's client, ready as soon as the kernel has answered kernel_info on the shell
    channel and its IOPub is known to be connected: the kernel's welcome to a new subscriber
    (ipykernel 7, JEP 65) or that request's 'idle' status arrived. Not after 0.2 s of IOPub
    silence on top (jupyter_client's flush), which every submission paid. Its sockets retry a
    connection every RECONNECT_MS, not every 100 ms (zmq's default): they connect before the
    kernel has bound its end, and each missed first try cost a submission up to 0.1 s."""

    RECONNECT_MS = 5

    @default("context")
    def _context_default(self) -> zmq.asyncio.Context:
        context = super()._context_default()
        context.setsockopt(zmq.RECONNECT_IVL, self.RECONNECT_MS)   # default for the sockets made from it
        return context

    def ride_along(self, expressions: dict) -> None:
        """Send these user expressions with the next execute request (once): they are evaluated
        right after that request's code, in its reply."""
        self._rider = dict(expressions)

    def execute(self, code, *args, user_expressions=None, **kwargs):
        """jupyter_client's, with what `ride_along` left for this request."""
        rider, self._rider = getattr(self, "_rider", None), None
        if rider:
            user_expressions = {**(user_expressions or {}), **rider}
        return super().execute(code, *args, user_expressions=user_expressions, **kwargs)

    async def wait_for_ready(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (float("inf") if timeout is None else timeout)
        asked = set()   # our kernel_info requests: a late answer to an earlier one counts too
        while True:
            asked.add(self.kernel_info())
            reply = await self._next(self.shell_channel, seconds=1, wanted=lambda m: m["parent_header"].get("msg_id") in asked)
            # a welcome or an 'idle' on IOPub proves IOPub connected; without either (a kernel
            # without welcomes whose subscription came too late for the idle) ask again
            if reply is not None and await self._next(self.iopub_channel, seconds=0.2, wanted=lambda m: (
                    m["msg_type"] == "iopub_welcome" or m["msg_type"] == "status"
                    and m["parent_header"].get("msg_id") in asked and m["content"].get("execution_state") == "idle")):
                self._handle_kernel_info_reply(reply)
                return
            if not await self._async_is_alive():
                raise RuntimeError("Kernel died before replying to kernel_info")
            if time.monotonic() > deadline:
                raise RuntimeError(f"Kernel didn't respond in {timeout} seconds")

    @staticmethod
    async def _next(channel, seconds: float, wanted) -> dict | None:
        """The first message on `channel` within `seconds` for which wanted(msg) holds, else None."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            try:
                msg = await channel.get_msg(timeout=left)
            except Empty:
                return None
            if wanted(msg):
                return msg
        return None


class SandboxedKernelManager(AsyncKernelManager):
    """A kernel manager whose kernels start through the stage, inside bubblewrap unless sandbox=False."""

    client_class = DottedObjectName("dlcourse.grading.kernel_manager.SandboxedKernelClient")
    client_factory = Type(klass=SandboxedKernelClient)

    sandbox = Bool(True, help="start the kernel inside bubblewrap").tag(config=True)
    scratch = Unicode(help="the kernel's working directory, the only place it may write").tag(config=True)
    connection_dir = Unicode(help="folder of the kernel's connection file and IPC sockets").tag(config=True)
    scratch_tmpfs_mb = Int(0, help="mount scratch as a tmpfs of this size in the sandbox (0: bind it)").tag(config=True)
    uid = Int(-1, help="unprivileged uid for the kernel (-1: keep the current one)").tag(config=True)
    limits = Dict(help="resource limits of every kernel process (Limits.rlimits())").tag(config=True)
    threads = Int(1, help="threads of torch and the BLAS libraries in the kernel (OMP_NUM_THREADS & co.)").tag(config=True)
    cgroup_procs = Unicode("", help="cgroup.procs of the kernel's memory cgroup ('' for none)").tag(config=True)
    template_socket = Unicode("", help="socket of a kernel template (kernel_template.py) to fork the kernel "
                              "from, inside its sandbox ('': start a fresh Python)").tag(config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.forked_pid = 0   # host pid of a kernel forked from the template (0: none)
        self.transport = "ipc"
        self.connection_file = os.path.join(self.connection_dir, "kernel.json")
        self.ip = os.path.join(self.connection_dir, "k")

    @property
    def kernel_spec(self):
        settings = self._stage_settings()
        argv = [sys.executable, "-I", str(STAGE), json.dumps(settings), "{connection_file}", "--",
                sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        if self.template_socket:   # the sandbox's first process waits for the kernel forked into it
            argv = [sys.executable, "-I", "-S", str(ANCHOR), self._fifo, str(self.uid)]
        if self.sandbox:
            argv = bwrap_prefix(self.scratch, self.connection_dir, os.geteuid() == 0, self.scratch_tmpfs_mb) + argv
        if self.cgroup_procs:
            argv = ["/bin/sh", "-c", JOIN, "sh", self.cgroup_procs] + argv
        return KernelSpec(argv=argv, display_name="Python 3 (grading)", language="python",
                          interrupt_mode="message")

    @property
    def _fifo(self) -> str:
        return os.path.join(self.connection_dir, "kernel-alive")

    def _stage_settings(self) -> dict:
        return {"limits": self.limits, "uid": self.uid if self.uid >= 0 else None,
                "home": self.scratch, "connection_dir": self.connection_dir, "threads": self.threads}

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw) -> None:
        kw["env"] = clean_environment()
        # what the client asked the kernel to take besides the spec (nbclient: an in-memory history)
        extra = kernel_cmd[len(self.format_kernel_cmd()):]
        if self.template_socket and not (self.sandbox and os.geteuid() == 0):
            self.template_socket = ""   # entering a sandbox's namespaces takes root
            kernel_cmd = self.format_kernel_cmd() + extra
        if not self.template_socket:
            await super()._async_launch_kernel(kernel_cmd, **kw)
            return
        if os.path.lexists(self._fifo):
            os.unlink(self._fifo)
        os.mkfifo(self._fifo, 0o600)
        if self.uid >= 0:
            os.chown(self._fifo, self.uid, self.uid)
        await super()._async_launch_kernel(kernel_cmd, **kw)
        try:
            await asyncio.get_running_loop().run_in_executor(None, self._fork_from_template, kw["env"], extra,
                                                       kw.get("stdout"))
        except (TemplateError, OSError) as error:
            print(f"[WARNING] {error}; this kernel starts afresh", flush=True)
            await self.provisioner.kill()
            await self.provisioner.wait()
            self.template_socket = ""
            await super()._async_launch_kernel(self.format_kernel_cmd() + extra, **kw)

    async def _async_wait(self, pollinterval: float = 0.1) -> None:
        """Wait until the kernel has ended, looking every 5 ms (jupyter_client looks every 0.1 s:
        a killed sandbox is gone within milliseconds, and every student would wait the rest)."""
        await super()._async_wait(pollinterval=min(pollinterval, 0.005))

    def _fork_from_template(self, env: dict, extra: list[str], log_fd: int | None = None) -> None:
        anchor = find_anchor(self.provisioner.process.pid)
        request = {"sandbox_pid": anchor, "fifo": self._fifo, "connection_file": self.connection_file,
                   "settings": self._stage_settings(), "env": env, "cgroup_procs": self.cgroup_procs,
                   "kernel_args": extra}
        self.forked_pid = fork_kernel(self.template_socket, request,
                                      sys.stdout.fileno() if log_fd is None else log_fd)

    @property
    def ipykernel(self) -> bool:
        return True
