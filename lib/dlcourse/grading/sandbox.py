"""Run: nbgrader's Execute with the caged kernel (SandboxedExecute), plus the integrity check.

The cage itself (bubblewrap, limits, the scratch tmpfs, kernel uids) is cage.py; the kernel's
manager and client are kernel_manager.py; the output caps are output_cap.py. What callers
imported from here before is re-exported.
"""
import json
import os
import sys
import time
from pathlib import Path
from queue import Empty

from nbclient.util import ensure_async, run_sync
from nbformat.v4 import new_code_cell, new_markdown_cell, new_output
from traitlets import Int, List, Unicode, default

from dlcourse.grading.cage import (FIRST_UID, PACKAGE_ROOT, STAGE, Limits, SandboxUnavailable, bwrap_prefix,
                                   check_bwrap, clean_environment, private_tmpfs, readable_paths)
from dlcourse.grading.cells import is_autograded_test
from dlcourse.grading.integrity import (CHECK_MISSING, baseline_source, check_expression, guard_expression,
                                        parse_answer)
from dlcourse.grading.kernel_manager import SandboxedKernelClient, SandboxedKernelManager
from dlcourse.grading.output_cap import LogTap, OutputCap, short_error
from dlcourse.grading.timelimits import CellTimeLimits, cell_key

__all__ = ["FIRST_UID", "PACKAGE_ROOT", "STAGE", "Limits", "SandboxUnavailable", "SandboxedExecute",
           "SandboxedKernelClient", "SandboxedKernelManager", "bwrap_prefix", "check_bwrap", "clean_environment",
           "is_autograded_test", "private_tmpfs", "readable_paths"]


def _peak_mb(pid: int) -> float | None:
    """Peak resident memory (VmHWM) of a running process in MB; None without one."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines() if pid else ():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _execute_base():
    from nbgrader.preprocessors import Execute
    return Execute


GUARD_FAILED = "the grader could not check the kernel before this test (its hooks were tampered with)"


class SandboxedExecute(_execute_base()):
    """nbgrader's Execute with the sandboxed kernel, plus an integrity check around the notebook
    (see integrity.py): a hidden first cell snapshots the interpreter's hooks; right before every
    graded test cell a guard puts them back; after the last cell a final check reports what still
    differs. Guard and check run as user expressions of empty requests, which no transformer,
    event or cell of the student sees, and answer in their shell replies. A test whose guard does
    not answer with this run's nonce is not run and scores 0. The first cell and the placeholder
    for the final check are removed again before grades are saved; the report (what changed, what
    the guards restored) goes to `report_path` as JSON."""

    nonce = Unicode(help="random per run: names the in-kernel module and signs its answers").tag(config=True)
    report_path = Unicode(help="where the integrity report is written (JSON list of flags)").tag(config=True)
    stages_path = Unicode(help="where the stage times are written (JSON: kernel_start, imports, execution)"
                          ).tag(config=True)
    preload = List(Unicode(), help="modules the baseline imports before it snapshots the libraries (what the "
                   "assignment's notebooks import: imports.notebook_imports)").tag(config=True)
    max_cell_output_bytes = Int(2**20, help="bytes of output one cell keeps, counted as it arrives; past them "
                                "stdout and displays are dropped, what nbgrader scores by is kept short, and a "
                                "note says how much was not kept (OutputCap; -1: no limit)").tag(config=True)
    max_notebook_output_bytes = Int(5 * 2**20, help="bytes of output the whole notebook keeps (as "
                                    "max_cell_output_bytes; -1: no limit)").tag(config=True)
    kernel_log_bytes = Int(2**16, help="bytes of the kernel's own stdout and stderr (its file descriptors, not the "
                           "notebook's output) copied to the grader's log; the rest is counted (-1: no limit)"
                           ).tag(config=True)

    cell_times_path = Unicode("", help="where the seconds each cell took are written (JSON {cell name: seconds}; "
                              "the batch times the model solution with it: timelimits.py)").tag(config=True)

    def __init__(self, *args, **kwargs):
        kwargs["kernel_manager_class"] = SandboxedKernelManager
        super().__init__(*args, **kwargs)
        self.kernel_name = "python3"  # never the submission's kernelspec
        self._restored = set()
        self._final = None
        self._time_limits = CellTimeLimits(parent=self)
        self._notebook, self._limit, self._imports_cell, self._stock_timeout_error = "", None, None, None
        self._cell_started, self._cell_msg_id, self._waits_for_times = 0.0, "", False
        self._guarded, self._reply = None, None   # the guard's answer from the last cell's reply

    @default("timeout_func")
    def _timeout_func_default(self):
        return self._cell_timeout

    def _cell_timeout(self, cell) -> int | None:
        """nbclient's timeout_func: the cell's own limit (timelimits.py), else the course's (Execute.timeout):
        in the grader's first cell and the notebook's first code cell (its imports: none in a kernel
        forked from the template, seconds in a fresh one on a busy machine)."""
        first = cell.get("id") == f"dlg-first-{self.nonce[:8]}" or cell is self._imports_cell
        self._cell_started = time.monotonic()
        self._waits_for_times = not first and self._time_limits.pending(self.timeout)
        if self._waits_for_times:   # until the solution is timed, the floor (see _wait_for_limit)
            self._limit = None
            return max(1, round(self._time_limits.timeout_floor))
        self._limit = None if first else self._time_limits.limit(cell, self._notebook, self.timeout)
        return self._limit.seconds if self._limit else self.timeout

    async def _async_poll_for_reply(self, msg_id, cell, timeout, *tasks):
        """nbclient's; the cell's request id is kept for `_wait_for_limit`."""
        self._cell_msg_id = msg_id
        return await super()._async_poll_for_reply(msg_id, cell, timeout, *tasks)

    async def _wait_for_limit(self, cell):
        """A cell ran past the floor before the model solution was timed: ask the batch to time it
        (timelimits.py) and keep waiting for the cell's reply, up to its limit once the times are
        there (the course's until then). The reply, or None once the limit is reached."""
        self._time_limits.request()
        while True:
            if not self._time_limits.pending(self.timeout):
                self._limit = self._time_limits.limit(cell, self._notebook, self.timeout)
            left = self._cell_started + (self._limit.seconds if self._limit else self.timeout) - time.monotonic()
            if left <= 0:
                return None
            try:
                msg = await ensure_async(self.kc.shell_channel.get_msg(timeout=min(left, 0.25)))
            except Empty:
                await self._async_check_alive()
                continue
            if msg["parent_header"].get("msg_id") == self._cell_msg_id:
                return msg

    async def _async_handle_timeout(self, timeout, cell=None):
        """nbclient's; the error a cell stopped at its own limit shows says which limit and why."""
        if self._waits_for_times:
            self._waits_for_times = False
            reply = await self._wait_for_limit(cell)
            if reply is not None:
                return reply   # nbclient takes it as the cell's reply
            timeout = self._limit.seconds if self._limit else self.timeout
        if self._stock_timeout_error is None:   # nbgrader's (or the configured) error, for the course's limit
            self._stock_timeout_error = dict(self.error_on_timeout)
        if self._limit is not None:
            why = f"stopped after {self._limit.seconds} s: {self._limit.why}"
            self.error_on_timeout = {"ename": "CellTimeoutError", "evalue": why,
                                     "traceback": [f"\x1b[0;31mCellTimeoutError\x1b[0m: {why}"]}
        else:
            self.error_on_timeout = dict(self._stock_timeout_error)
        return await super()._async_handle_timeout(timeout, cell)

    def process_message(self, msg, cell, cell_index):
        """nbclient's, on what the output caps (OutputCap) let through."""
        cap = getattr(self, "_output_cap", None)
        if cap is None or cap.nb is not self.nb:
            cap = self._output_cap = OutputCap(self.max_cell_output_bytes, self.max_notebook_output_bytes, self)
        admitted = cap.admit(msg, cell)
        try:
            return None if admitted is None else super().process_message(admitted, cell, cell_index)
        finally:
            cap.show(cell)

    def on_cell_executed(self, **kwargs):
        """nbgrader's (it adds an error that only the shell reply reports), on a reply shortened as
        the cell's error output was, once the cell's output went past the caps."""
        cap, reply = getattr(self, "_output_cap", None), kwargs.get("execute_reply") or {}
        self._reply = reply   # a guard that went with the request answers in it (`_guard_rides`)
        if cap is not None and cap.cell is kwargs.get("cell") and cap.dropped and \
                reply.get("content", {}).get("status") == "error":
            kwargs["execute_reply"] = {**reply, "content": {**reply["content"], **short_error(reply["content"])}}
        return super().on_cell_executed(**kwargs)

    async def async_start_new_kernel(self, **kwargs):
        """nbclient's, with the kernel's stdout and stderr going to the log through a LogTap."""
        tap = LogTap(sys.stdout.fileno(), self.kernel_log_bytes) if self.kernel_log_bytes >= 0 else None
        if tap is not None:
            kwargs.setdefault("stdout", tap.write_fd)
            kwargs.setdefault("stderr", tap.write_fd)
        try:
            await super().async_start_new_kernel(**kwargs)
        finally:
            if tap is not None:
                os.close(tap.write_fd)   # the kernel has its own copy: the tap ends when the kernel does

    start_new_kernel = run_sync(async_start_new_kernel)

    def preprocess(self, nb, resources=None, km=None):
        first = new_code_cell(baseline_source(self.nonce, self.preload))
        last = new_markdown_cell("")  # where the final check runs; never executed as a cell
        first.id, last.id = f"dlg-first-{self.nonce[:8]}", f"dlg-last-{self.nonce[:8]}"
        nb.cells = [first, *nb.cells, last]
        self._restored, self._final, self._kernel_mb = set(), None, None
        self._clock = {"begin": time.monotonic(), "cells": []}  # (kind, start, end) of every cell run
        self._notebook, self.cell_seconds = (resources or {}).get("unique_key", ""), {}
        self._imports_cell = next((c for c in nb.cells[1:] if c.cell_type == "code"), None)
        try:
            nb, resources = super().preprocess(nb, resources, km)
        finally:
            self._write_stages()
            if self.cell_times_path:
                Path(self.cell_times_path).write_text(json.dumps(self.cell_seconds))
            report = self._final if self._final is not None else [CHECK_MISSING]
            report = sorted(set(report) | self._restored)
            nb.cells = [c for c in nb.cells if c.get("id") not in (first.id, last.id)]
            if self.report_path:
                Path(self.report_path).write_text(json.dumps(report))
        return nb, resources

    def preprocess_cell(self, cell, resources, index):
        if cell.get("id") == f"dlg-last-{self.nonce[:8]}":
            self._final = self._ask(check_expression(self.nonce))
            self._kernel_mb = _peak_mb(getattr(self.km, "forked_pid", 0))
            return cell, self.resources
        guarded, self._reply = self._guarded, None
        if cell.cell_type == "code" and cell.source.strip():   # a request: the answer was for it or for none
            self._guarded = None
        if is_autograded_test(cell) and cell.source.strip():
            restored = guarded if guarded is not None else self._ask(guard_expression(self.nonce))
            if restored is None:
                self._restored.add("a guard before a test cell did not answer (kernel hooks changed)")
                cell.outputs = [new_output("error", ename="GradingIntegrityError", evalue=GUARD_FAILED,
                                           traceback=[f"GradingIntegrityError: {GUARD_FAILED}"])]
                return cell, self.resources
            self._restored.update(restored)
        start, rides = time.monotonic(), self._guard_rides(cell, index)
        try:
            if cell.get("id") == f"dlg-first-{self.nonce[:8]}":   # no prompt number of its own: the
                self._check_assign_resources(resources)          # student's cells count from 1, as in stock nbgrader
                return self.execute_cell(cell, index, store_history=False), self.resources
            return super().preprocess_cell(cell, resources, index)
        finally:
            self.kc.ride_along({})   # a cell that sent no request (empty) leaves nothing for the next
            if rides:
                self._guarded = parse_answer(self._reply, self.nonce, "guard")
            if cell.cell_type == "code":
                first = cell.get("id") == f"dlg-first-{self.nonce[:8]}"
                self._clock["cells"].append((first, start, time.monotonic()))
                if not first:   # the notebook's own cells, what time limits are derived from (timelimits.py)
                    self.cell_seconds[cell_key(cell)] = time.monotonic() - start

    def _guard_rides(self, cell, index: int) -> bool:
        """Whether the guard before the next test cell goes with this cell's request (when the next
        cell that runs is a test): evaluated right after this cell's code, it saves a request of its
        own. Its answer (None where the cell failed and the kernel evaluated nothing, or where the
        answer is not the guard's) falls back to that request (`preprocess_cell`)."""
        if cell.cell_type != "code" or not cell.source.strip() or cell.get("id", "").startswith("dlg-"):
            return False
        after = next((c for c in self.nb.cells[index + 1:] if c.cell_type == "code" and c.source.strip()), None)
        if after is None or not is_autograded_test(after):
            return False
        self.kc.ride_along({"guard": guard_expression(self.nonce)})
        return True

    def _write_stages(self) -> None:
        """Seconds spent starting the kernel (up to its first cell, the baseline included), in the
        notebook's first code cell (its imports) and in every other cell (guards included)."""
        if not self.stages_path:
            return
        cells = self._clock["cells"]
        own = [c for c in cells if not c[0]]
        stages = {"kernel_start": (own[0][1] if own else time.monotonic()) - self._clock["begin"],
                  "imports": own[0][2] - own[0][1] if own else 0.0,
                  "execution": (own[-1][2] - own[0][2]) if own else 0.0}
        if self._kernel_mb is not None:   # a forked kernel is not the worker's child: its own peak
            stages["kernel_mb"] = self._kernel_mb
        stages["student_cells"] = len(own)   # cells of the notebook that started: after one, what happens is the student's
        Path(self.stages_path).write_text(json.dumps(stages))

    def _ask(self, expression: str) -> list[str] | None:
        """Evaluate a guard or check in the kernel; its flags, or None when it did not answer."""
        msg_id = self.kc.execute("", silent=True, store_history=False, user_expressions={"answer": expression})
        return parse_answer(self.wait_for_reply(msg_id), self.nonce, "answer")
