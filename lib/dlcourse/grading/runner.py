"""Run: the batch's slots: each Job's worker started, watched (budget, memory cap) and released.

    Runner(root, assignment, settings, url, logs, done, template=template).run(todo, stop)

Each job runs `worker.worker` in a process of its own (own session, own kernel uid claimed for
the batch, own sandboxed kernel with rlimits, a scratch tmpfs and a memory cgroup); the runner
stops a worker that overruns its wall-clock budget and a kernel whose processes hit the memory
cap; every slot is given back through `Runner._release`; done(job, outcome) gets each final
Outcome. Also here: the batch's kernel template (`launch_template`), the work done once before
the workers fork (`warm_up`), the model solution's timing (`time_solution`) and the batch's
stop signals.
"""
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

from dlcourse.grading.cage import claim_uids, kill_uid
from dlcourse.grading.cgroups import MemoryCap
from dlcourse.grading.feedback import FeedbackExporter
from dlcourse.grading.imports import notebook_imports
from dlcourse.grading.kernel_template import LISTENING, KernelTemplate
from dlcourse.grading.outcome import RETRY_NOTE, Failure, Job, Outcome, Row, fork_trouble
from dlcourse.grading.redact import remember_messages
from dlcourse.grading.settings import Settings
from dlcourse.grading.worker import worker
from dlcourse.grading.worker_process import WorkerContext



class StopSignals(list):
    """Signals (SIGINT, SIGTERM) received while the batch runs; `restore()` puts the old handlers back."""

    def __init__(self):
        super().__init__()
        self.old = {}

    def restore(self):
        for sig, handler in self.old.items():
            signal.signal(sig, handler)


def catch_stop_signals() -> StopSignals:
    """Record SIGINT/SIGTERM instead of raising wherever they land: a KeyboardInterrupt raised inside
    a finalizer (a database connection being collected, say) is printed and ignored by Python,
    and the batch would carry on. The main loop checks the record and stops cleanly."""
    stop = StopSignals()
    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) is signal.SIG_IGN:  # e.g. a background job: stays ignored
            continue
        try:
            stop.old[sig] = signal.signal(sig, lambda signum, frame: stop.append(signum))
        except ValueError:  # not the main thread: leave the handlers alone
            break
    return stop



class Runner:
    """Runs jobs in `settings.workers` slots: start, watch (budget, memory cap), release, finish."""

    def __init__(self, root, assignment, settings: Settings, url: str, logs: Path, done, start_method: str = "fork",
                 template=None, tail_work=None, on_request=None):
        """done(job, outcome): called once per job with its final Outcome (`Finisher` or a Dask task's);
        start_method: multiprocessing's ("fork", "spawn"), or "subprocess" (worker_process.py: a new
        Python, where this process is daemonic and multiprocessing may not start children);
        template: a launched KernelTemplate (`launch_template`) to fork the kernels from, or None;
        tail_work: a callable run in a thread of this process once every job has started, while
        the last ones run (the report's imports and the library's fingerprints): no worker is
        forked while it runs (a job tried again waits for it), so no fork inherits a half-done import;
        on_request: (job, path): a job started in a slot of its own once `path` appears (a worker
        asks the batch to time the model solution: timelimits.py), or never."""
        import multiprocessing
        self.root, self.assignment, self.settings, self.url, self.logs = root, assignment, settings, url, logs
        self.done = done
        self.ctx = WorkerContext() if start_method == "subprocess" else multiprocessing.get_context(start_method)
        self.on_request = on_request
        self.spare = settings.workers if on_request else None   # the requested job's own slot
        self.uids, self.uid_locks = claim_uids(settings.workers + (1 if on_request else 0))
        self.work_root = Path(tempfile.mkdtemp(prefix="dlg-"))
        self.work_root.chmod(0o711)  # the kernels' uids pass through to their own (private) scratch folders
        self.bytecode_dir = self.work_root / "templates"   # the feedback's compiled templates (feedback.py)
        self.bytecode_dir.mkdir(mode=0o700)
        self.free = list(range(settings.workers))
        self.running: dict[int, Job] = {}
        self.warned = False
        self.template = template
        self.tail_work, self.tail = tail_work, None

    def _wait_for_template(self) -> None:
        if self.template is not None:
            why = self.template.wait_ready(until=LISTENING)
            if why:
                print(f"warning: {why}; every kernel starts afresh", file=sys.stderr)
                self.template = None

    def run(self, todo: list[Job], stop) -> None:
        import multiprocessing.connection
        try:
            self._wait_for_template()
            while todo or self.running:
                if stop:  # Ctrl-C or kill: raised here, never inside a library's cleanup code that would swallow it
                    raise KeyboardInterrupt(f"stopped by signal {stop[0]}")
                while todo and self.free:
                    self._start(todo.pop(0), self.free.pop(0))
                if self.on_request and self.on_request[1].exists():
                    self._start(self.on_request[0], self.spare)
                    self.on_request = None
                # wake as soon as a worker ends; at least every 50 ms (budgets, memory caps, signals)
                multiprocessing.connection.wait([job.process.sentinel for job in self.running.values()], 0.05)
                finished = []
                for job in list(self.running.values()):
                    outcome = self._poll(job)
                    if outcome is None:
                        continue
                    self._release(job)
                    if outcome.retry:
                        job.retried = True
                        if outcome.retry_note:
                            job.row["notes"].append(outcome.retry_note)
                        todo.insert(0, job)
                    else:
                        outcome.seconds = round(time.monotonic() - job.started, 2)  # this student's last attempt
                        finished.append((job, outcome))
                while todo and self.free and not stop:   # the freed slots work again before the bookkeeping
                    self._start(todo.pop(0), self.free.pop(0))
                if not todo and self.tail_work is not None and self.tail is None:
                    self.tail = threading.Thread(target=self.tail_work, name="tail-work", daemon=True)
                    self.tail.start()
                for job, outcome in finished:
                    self.done(job, outcome)
        finally:
            for job in list(self.running.values()):
                self._release(job)
            for _ in range(5):  # a kernel that is still being torn down may write a last file
                shutil.rmtree(self.work_root, ignore_errors=True)
                if not self.work_root.exists():
                    break
                time.sleep(0.2)
            for fd in self.uid_locks:
                os.close(fd)

    def _start(self, job: Job, slot: int) -> None:
        ctx = self.ctx
        if self.tail is not None and slot == self.spare and self.tail.is_alive():
            ctx = WorkerContext()   # asked for while the tail work runs: a new Python (no fork), at once
        elif self.tail is not None:
            self.tail.join()   # never fork while another thread may hold an import's lock
        job.slot, job.work = slot, self.work_root / f"s{slot}" / job.student
        job.work.mkdir(parents=True)
        job.cap = MemoryCap.create(f"dlcourse-grader-{os.getpid()}-{slot}", self.settings.limits.total_memory_mb)
        if job.cap is None and not self.warned:
            self.warned = True
            print("warning: no memory cgroup can be made here (needs root and cgroup v1 or v2 with the memory "
                  "controller): only the per-process memory limit applies", file=sys.stderr)
        job.process = ctx.Process(target=worker, args=(
            self.root, self.assignment, job.student, self.uids[slot], self.settings, job.work, self.url,
            job.work / "result.json", self.logs / f"{job.student}.log", str(job.cap.procs) if job.cap else "",
            str(self.template.socket_path) if self.template and not job.fresh else "", str(self.bytecode_dir),
            job.solution))
        job.process.start()
        job.started = time.monotonic()
        self.running[slot] = job

    def _poll(self, job: Job) -> Outcome | None:
        """None while the job runs; its Outcome once the worker has ended (or was stopped). A run
        with a forked kernel that ended in trouble that is not the student's (`fork_trouble`) is
        run again with a fresh kernel, whose outcome counts."""
        outcome = self._outcome(job)
        if outcome is None or self.template is None or job.fresh:
            return outcome
        trouble = fork_trouble(outcome)
        if not trouble:
            return outcome
        job.fresh = True
        log = self.logs / f"{job.student}.log"
        if log.exists():
            os.replace(log, log.with_suffix(".forked.log"))
        print(f"{job.student}: the run with a forked kernel ended in \"{trouble}\"; grading again with a fresh kernel",
              file=sys.stderr)
        return replace(outcome, retry=True, retry_note=RETRY_NOTE if outcome.failure is Failure.KERNEL_DIED else "")

    def _outcome(self, job: Job) -> Outcome | None:
        """None while the worker runs; then the Outcome it wrote (`Outcome.read`), or the runner's
        own where it stopped the worker (budget, memory cap)."""
        proc = job.process
        if job.cap is not None and job.cap.oom_kills():
            job.cap.kill()  # one process hit the cap: the whole submission stops (as v2's memory.oom.group)
        if proc.is_alive() and time.monotonic() < job.started + self.settings.budget:
            return None
        if proc.is_alive():
            os.killpg(proc.pid, signal.SIGKILL)
            proc.join()
            return Outcome.failed(Failure.BUDGET, Failure.BUDGET.reason(budget=self.settings.budget))
        proc.join()
        if job.cap is not None and job.cap.oom_kills():
            return Outcome.failed(Failure.MEMORY_CAP, Failure.MEMORY_CAP.reason(mb=self.settings.limits.total_memory_mb))
        outcome = Outcome.read(job.work / "result.json", proc.exitcode)
        # A kernel can also die of something that is not the student's doing (the machine under
        # memory pressure); one more try tells the two apart.
        outcome.retry = outcome.failure is Failure.KERNEL_DIED and not job.retried
        return outcome

    def _release(self, job: Job) -> None:
        """The one way a slot is given back: worker stopped, kernel processes killed, cgroup and files removed."""
        if job.process is not None and job.process.is_alive():
            os.killpg(job.process.pid, signal.SIGKILL)
            job.process.join()
        kill_uid(self.uids[job.slot])
        if job.cap is not None:
            job.cap.remove()
        shutil.rmtree(job.work, ignore_errors=True)
        del self.running[job.slot]
        if job.slot != self.spare:
            self.free.append(job.slot)



SOLUTION = "_model_solution"   # the timed model solution's job and log (no student id starts with "_")


def time_solution(root: Path, assignment: str, settings: Settings, url: str, logs: Path, stop=(),
                  start_method: str = "fork", template=None) -> dict:
    """{notebook: {cell: seconds}} of the model solution, run once as a submission is (a worker,
    its sandbox and limits, a kernel forked from `template` where there is one): what each cell's
    time limit is derived from (timelimits.py). {} where it could not run (then every cell gets
    the course's limit) or where time limits are switched off (timeout_factor 0)."""
    if settings.timeout_factor == 0:
        return {}
    result = {}
    one = replace(settings, workers=1, feedback=False, solution_seconds={})
    Runner(root, assignment, one, url, logs, lambda job, outcome: result.update(outcome=outcome), start_method,
           template=template).run([Job(SOLUTION, Row(student=SOLUTION, notes=[], flags=[]), solution=True)], stop)
    outcome = result.get("outcome")
    if outcome is None or not outcome.success:
        print(f"warning: the model solution could not be timed ({outcome.reason if outcome else 'stopped'}; "
              f"see {logs / (SOLUTION + '.log')}): every cell gets the course's limit", file=sys.stderr)
        return {}
    return outcome.solution_seconds


def handing_off(finish, path: Path, logs: Path):
    """done(job, outcome) for a batch that times the model solution when a worker asks for it
    (`Runner`'s on_request): that job's cell times go to `path` (atomically; {} when it failed:
    the course's limit everywhere), where the workers' CellTimeLimits read them; every other job
    goes to `finish`."""
    def done(job, outcome, *args):
        if not job.solution:
            return finish(job, outcome, *args)
        times = outcome.solution_seconds if outcome.success else {}
        if not outcome.success:
            print(f"warning: the model solution could not be timed ({outcome.reason}; see "
                  f"{logs / (SOLUTION + '.log')}): every cell gets the course's limit", file=sys.stderr)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(times))
        os.replace(tmp, path)
    return done


def launch_template(settings: Settings, notebooks: list[Path]):
    """The batch's kernel template (kernel_template.py), launched: it imports what the assignment's
    source `notebooks` import (the instructor's, never a student's) while the batch is planned.
    None where it cannot be used (not root, no sandbox, switched off, on a Dask cluster)."""
    if not (settings.fork_kernels and settings.sandbox and not settings.scheduler and os.geteuid() == 0):
        return None
    template = KernelTemplate(notebook_imports(notebooks))
    template.launch()
    return template


# a notebook with every kind of cell and output that an autograded notebook has (markdown with
# math and a table, code, stream, a result, a traceback in ANSI colours, an image), in the
# language that ipykernel reports
WARM_UP_NOTEBOOK = {
    "nbformat": 4, "nbformat_minor": 5,
    "metadata": {"language_info": {"name": "python", "pygments_lexer": "ipython3"}},
    "cells": [
        {"cell_type": "markdown", "id": "w1", "metadata": {},
         "source": "# A *title*\n\n$x^2$ and `code`\n\n| a | b |\n|---|---|\n| 1 | 2 |"},
        {"cell_type": "code", "id": "w2", "metadata": {}, "execution_count": 1,
         "source": "import torch\nx = torch.ones(2)  # a comment\nprint(f'{x!r}')\n%time x\nassert x.sum() == 3, 'wrong'",
         "outputs": [
             {"output_type": "stream", "name": "stdout", "text": "tensor([1., 1.])\n"},
             {"output_type": "execute_result", "execution_count": 1, "metadata": {},
              "data": {"text/plain": "2", "text/html": "<b>2</b>"}},
             {"output_type": "display_data", "metadata": {}, "data": {
                 "text/plain": "<Figure>", "image/png": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGP4z8DwHwAFAAH/iZk9HQAAAABJRU5ErkJggg=="}},
             {"output_type": "error", "ename": "AssertionError", "evalue": "wrong",
              "traceback": ["\x1b[0;31mAssertionError\x1b[0m: wrong"]}]},
    ],
}


def warm_up(plugins=(), solutions=()) -> None:
    """Do once, in the batch's own process, what every worker would otherwise do again: import
    nbformat's schema validators, pygments' lexers (their regular expressions are compiled on
    first use and kept on the class) and the rest of nbconvert's HTML export, by rendering
    WARM_UP_NOTEBOOK; read jupyter_client's kernel provisioners (every installed package's entry
    points) into its KernelProvisionerFactory; import the modules of `plugins` (the preprocessors the course's
    nbgrader_config.py names by their dotted names); read what the `solutions` notebooks import
    and what their tests' messages say (the kernel's preload and the feedback's redaction). The
    workers are forks of this process and inherit all of it. Nothing is written."""
    import importlib

    import nbformat
    from jupyter_client.provisioning import KernelProvisionerFactory
    from nbconvert.exporters import HTMLExporter
    HTMLExporter().from_notebook_node(nbformat.from_dict(WARM_UP_NOTEBOOK))
    KernelProvisionerFactory.instance()   # reads every installed package's entry points (20 ms)
    for dotted in plugins:
        if isinstance(dotted, str) and "." in dotted:
            try:
                importlib.import_module(dotted.rpartition(".")[0])
            except ImportError:   # the worker meets it and says so, as it would without the warm-up
                pass
    notebook_imports(solutions)
    remember_messages(solutions)


def compile_feedback_templates(cfg, bytecode_dir: Path, release=()) -> None:
    """Compile the feedback's Jinja templates into `bytecode_dir` (the workers' FeedbackExporter
    loads them from there) once, in the batch's own process, by rendering WARM_UP_NOTEBOOK with
    the exporter that nbgrader's GenerateFeedback makes from the course's configuration `cfg`;
    and render the markdown cells of the `release` notebooks (what every student's copy shares)
    into feedback.RENDERED, which the workers, its forks, inherit.
    Without it the first workers each compile all of them at once (0.2 s apiece). Whatever goes
    wrong here is left to the workers, which compile what they need and report what fails."""
    import copy

    import nbformat
    from nbgrader.converters import GenerateFeedback
    from nbgrader.coursedir import CourseDirectory
    cfg = copy.deepcopy(cfg)
    cfg.GenerateFeedback.exporter_class = FeedbackExporter
    cfg.FeedbackExporter.bytecode_dir = str(bytecode_dir)
    info = {"notebook": "warm-up", "score": 0.0, "max_score": 0.0, "late_penalty": 0.0}
    try:
        converter = GenerateFeedback(coursedir=CourseDirectory(config=cfg), config=cfg)
        exporter = converter.exporter_class(parent=converter, config=converter.config)
    except Exception:  # noqa: BLE001 -- the workers meet it and report it
        return
    try:
        exporter.from_notebook_node(nbformat.from_dict(WARM_UP_NOTEBOOK), resources={"nbgrader": info})
    except Exception:  # noqa: BLE001 -- a course's own template the warm-up cannot fill: the workers compile it
        pass
    try:
        for path in release:
            for cell in nbformat.read(path, as_version=4).cells:
                if cell.cell_type == "markdown":
                    exporter.markdown2html({"cell": cell, "resources": {"metadata": {"path": str(Path(path).parent)}}},
                                           cell.source)
    except Exception:  # noqa: BLE001 -- what is not rendered here, the workers render
        pass
