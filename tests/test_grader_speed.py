"""What makes a batch fast, each tested as a behaviour that the slower code lacked (no timing:
the benchmark, benchmarks/grade_benchmark.py, measures the time):

- the kernel client's sockets retry a connection every few milliseconds, not every 100 ms: they
  connect before the kernel has bound its end;
- the client is ready once the kernel has answered kernel_info and welcomed its IOPub
  subscription (ipykernel 7), and asks again when neither a welcome nor the request's 'idle'
  came (a subscription that missed them);
- the kernel template imports what the assignment's notebooks import (`notebook_imports`);
- a grading worker's Gradebooks share one SQLAlchemy engine per database, and only its first
  Gradebook on a database and course checks the tables and the course;
- the batch reads the kernel provisioners (every package's entry points) before its workers fork;
- nbgrader's cell-metadata checks check their schema against its meta-schema once, and judge
  every cell as jsonschema.validate does.
"""
import asyncio
import os
import sys
import time
from pathlib import Path
from queue import Empty

import nbformat
import zmq

from dlcourse.grading.imports import notebook_imports
from dlcourse.grading.sandbox import SandboxedKernelClient


def test_the_client_retries_its_connections_every_few_milliseconds():
    kc = SandboxedKernelClient(transport="ipc", ip="/nonexistent/k", shell_port=1)
    sock = kc.connect_shell()
    try:
        assert sock.getsockopt(zmq.RECONNECT_IVL) == SandboxedKernelClient.RECONNECT_MS <= 10
    finally:
        sock.close(linger=0)
        kc.context.term()


class FakeChannel:
    """A channel that hands out the queued messages, then waits out the timeout (Empty)."""

    def __init__(self, messages):
        self.messages = list(messages)

    async def get_msg(self, timeout=None):
        if self.messages:
            return self.messages.pop(0)
        await asyncio.sleep(timeout or 0)
        raise Empty


class FakeClient(SandboxedKernelClient):
    """The real wait_for_ready over fake channels; iopub(asked) gives the IOPub messages."""

    def __init__(self, iopub):
        super().__init__()
        self.asked, self.iopub = [], iopub
        self._shell_channel = FakeChannel([])
        self._iopub_channel = FakeChannel([])

    def kernel_info(self):
        msg_id = f"info-{len(self.asked)}"
        self.asked.append(msg_id)
        self._shell_channel.messages.append({"parent_header": {"msg_id": msg_id}, "msg_type": "kernel_info_reply",
                                             "content": {"status": "ok", "protocol_version": "5.4"}})
        self._iopub_channel.messages += self.iopub(msg_id)
        return msg_id

    async def _async_is_alive(self):
        return True


def idle(msg_id):
    return {"msg_type": "status", "parent_header": {"msg_id": msg_id}, "content": {"execution_state": "idle"}}


WELCOME = {"msg_type": "iopub_welcome", "parent_header": {}, "content": {"subscription": ""}}


def ready(kc) -> float:
    start = time.monotonic()
    asyncio.run(kc.wait_for_ready(timeout=10))
    return time.monotonic() - start


def test_the_client_is_ready_on_the_kernels_welcome_without_waiting_for_an_idle():
    kc = FakeClient(lambda msg_id: [WELCOME] if msg_id == "info-0" else [])
    assert ready(kc) < 0.15   # not the 0.2 s wait for an idle that never comes
    assert kc.asked == ["info-0"]


def test_the_client_is_ready_on_its_requests_idle_from_a_kernel_without_welcomes():
    kc = FakeClient(lambda msg_id: [idle(msg_id)])
    ready(kc)
    assert kc.asked == ["info-0"]


def test_the_client_asks_again_when_iopub_proved_nothing():
    """A subscription that came too late saw neither the welcome nor the idle of the first
    request (nor anything that is not about our requests): ask again, ready on the second."""
    stranger = {"msg_type": "status", "parent_header": {"msg_id": "someone-else"}, "content": {"execution_state": "idle"}}
    kc = FakeClient(lambda msg_id: [stranger] if msg_id == "info-0" else [idle(msg_id)])
    ready(kc)
    assert kc.asked == ["info-0", "info-1"]


def test_notebook_imports_lists_what_the_code_cells_import(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("import markdown_is_not_code"),
        nbformat.v4.new_code_cell("import torch\nimport numpy as np, os.path\nfrom dlcourse.conv import corr2d\n"
                                  "def f():\n    import json\n    from . import relative\n"),
        nbformat.v4.new_code_cell("%matplotlib inline\nimport not_plain_python"),   # IPython syntax: skipped
        nbformat.v4.new_code_cell("from torch.nn import functional as F")])
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    assert notebook_imports([path]) == ["dlcourse.conv", "json", "numpy", "os.path", "torch", "torch.nn"]


def test_a_workers_gradebooks_share_one_engine_per_database(tmp_path, monkeypatch):
    import nbgrader.api
    from nbgrader.api import Gradebook

    from dlcourse.grading.nbgrader_patches import one_engine_per_database
    monkeypatch.setattr(nbgrader.api, "create_engine", nbgrader.api.create_engine)   # put back afterwards
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))  # alembic
    one_engine_per_database()
    url, other = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    with Gradebook(url, "course") as gb:
        gb.add_student("ada")
        first = gb.engine
    with Gradebook(url, "course") as gb:   # after the first one was closed (its engine disposed)
        assert gb.engine is first
        assert [s.id for s in gb.students] == ["ada"]
    with Gradebook(other, "course") as gb:
        assert gb.engine is not first
        assert gb.students == []
    one_engine_per_database()   # a worker's call, after its fork: the engines it inherited stay in use
    with Gradebook(url, "course") as gb:
        assert gb.engine is first
        assert [s.id for s in gb.students] == ["ada"]


def test_a_workers_later_gradebooks_check_the_tables_and_the_course_once(tmp_path, monkeypatch):
    import nbgrader.api
    from nbgrader.api import Base, Course, Gradebook

    from dlcourse.grading.nbgrader_patches import one_engine_per_database, open_gradebooks_once
    monkeypatch.setattr(nbgrader.api, "create_engine", nbgrader.api.create_engine)   # put back afterwards
    monkeypatch.setattr(Gradebook, "__init__", Gradebook.__init__)
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))  # alembic
    created, create_all = [], Base.metadata.create_all
    monkeypatch.setattr(Base.metadata, "create_all", lambda *a, **k: (created.append(k.get("bind")), create_all(*a, **k)))
    one_engine_per_database()
    open_gradebooks_once()
    open_gradebooks_once()   # a second call changes nothing
    url, other = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    with Gradebook(url, "course") as gb:   # the first: nbgrader's own checks make the tables and the course
        gb.add_student("ada")
    assert len(created) == 1
    for _ in range(3):
        with Gradebook(url, "course") as gb:   # later ones: the engine and a session, nothing checked
            assert [s.id for s in gb.students] == ["ada"] and gb.course_id == "course" and gb.authenticator is None
            gb.add_assignment("ps1")
            gb.remove_assignment("ps1")
    assert len(created) == 1
    with Gradebook(url, "another") as gb:   # another course on that database is checked (and added)
        assert {c.id for c in gb.db.query(Course)} == {"course", "another"}
    with Gradebook(other, "course") as gb:   # so is another database
        assert gb.students == []
    assert len(created) == 3


def test_the_batch_reads_the_kernel_provisioners_before_its_workers_fork(monkeypatch):
    from jupyter_client.provisioning import KernelProvisionerFactory

    from dlcourse.grading.runner import warm_up
    monkeypatch.setattr(KernelProvisionerFactory, "_instance", None)   # as in a new process
    reads = []
    read = KernelProvisionerFactory._get_all_provisioners
    monkeypatch.setattr(KernelProvisionerFactory, "_get_all_provisioners",
                        staticmethod(lambda: reads.append(1) or read()))
    warm_up()
    assert reads == [1]
    factory = KernelProvisionerFactory.instance()   # what each worker's kernel manager asks for
    assert reads == [1] and "local-provisioner" in factory.provisioners


def _metadata_cases():
    good = {"schema_version": 3, "grade": True, "solution": False, "locked": True, "points": 2, "grade_id": "a"}
    return [good, dict(good, points="two"), dict(good, grade="yes"), dict(good, schema_version="3"), {},
            dict(good, grade_id=None), []]


def test_nbgraders_metadata_checks_judge_as_jsonschema_does_and_check_their_schema_once(monkeypatch):
    import jsonschema
    import nbgrader.nbgraderformat.common as common
    from nbgrader.nbgraderformat import MetadataValidator

    from dlcourse.grading.nbgrader_patches import SchemaCheckedOnce, check_schemas_once
    monkeypatch.setattr(common, "jsonschema", jsonschema)   # put back afterwards
    schema = MetadataValidator().schema

    def outcome(check, instance, schema):
        try:
            check(instance, schema)
        except jsonschema.ValidationError as error:
            return ("invalid", error.message, list(error.path), list(error.schema_path))
        return ("valid",)

    checked = []
    monkeypatch.setattr(jsonschema.Draft4Validator, "check_schema",
                        classmethod(lambda cls, s, **kw: checked.append(s)))
    check_schemas_once()
    assert isinstance(common.jsonschema, SchemaCheckedOnce)
    cases = _metadata_cases()
    theirs = [outcome(jsonschema.validate, case, schema) for case in cases]
    checked.clear()
    ours = [outcome(common.jsonschema.validate, case, schema) for case in cases]
    assert ours == theirs and {o[0] for o in ours} == {"valid", "invalid"}
    assert checked == [schema]   # once, for all the cells
    assert common.jsonschema.ValidationError is jsonschema.ValidationError   # the rest is jsonschema's
    monkeypatch.undo()
    with __import__("pytest").raises(jsonschema.SchemaError):   # a schema that is itself wrong still fails
        SchemaCheckedOnce().validate({}, {"type": 12})
