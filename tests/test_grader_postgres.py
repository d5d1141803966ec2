"""The batch grader with its gradebook on a real PostgreSQL server.

The test starts its own server (Debian's `postgresql` package, installed on demand by
tests/system_packages.py): initdb into a fresh folder as the `postgres` user, pg_ctl start on a
free localhost port with its socket folder beside the data, stopped and removed in teardown
whatever happens. The same class of the tiny assignment is graded with 2 parallel workers
into PostgreSQL and into SQLite; scores, statuses and the gradebook must agree.
"""
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import nbformat
import pytest

from fixtures.tiny_assignment import ASSIGNMENT, NOTEBOOK, POINTS
from nbgrader_harness import solved, tiny_course
from system_packages import ensure_debian_packages

from dlcourse.grading.batch import Settings, grade_batch
from dlcourse.grading.sandbox import Limits

REPO = Path(__file__).resolve().parents[1]
SUBMISSIONS = {  # student: solution overrides (None: the model answer; "release": untouched)
    "ada": None,
    "bo": {"add": "def add(a, b):\n    return a - b"},
    "cy": "release",
    "di": {"mean": "def mean(xs):\n    return 0"},
    "ed": {"add": "import os\nos._exit(0)"},
    "flo": None,
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """A throw-away PostgreSQL server on localhost; yields an SQLAlchemy URL of an empty database."""
    paths = ensure_debian_packages(["postgresql"], ["initdb", "pg_ctl"])
    psycopg = pytest.importorskip("psycopg", reason="needs psycopg[binary] (the dev extra)")
    # not under pytest's tmp folder: that one is private to root and the server runs as `postgres`
    base = Path(tempfile.mkdtemp(prefix="dlcourse-pg-"))
    data, sockets, log = base / "data", base / "sockets", base / "server.log"
    sockets.mkdir()
    prefix = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        user = pwd.getpwnam("postgres")
        for p in (base, sockets):
            os.chown(p, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    port = _free_port()

    def pg(*args, check=True):
        proc = subprocess.run(prefix + list(args), capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            text = log.read_text() if log.exists() else ""
            raise RuntimeError(f"{' '.join(args[:1])} failed:\n{proc.stdout}\n{proc.stderr}\n{text}")
        return proc

    started = False
    try:
        pg(paths["initdb"], "-D", str(data), "-A", "trust", "-U", "grader", "-E", "UTF8", "--no-sync")
        pg(paths["pg_ctl"], "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o",
           f"-p {port} -k {sockets} -h 127.0.0.1 -c fsync=off -c max_connections=40", "start")
        started = True
        with psycopg.connect(host="127.0.0.1", port=port, user="grader", dbname="postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE gradebook")
        yield f"postgresql+psycopg://grader@127.0.0.1:{port}/gradebook"
    finally:
        if started:
            pg(paths["pg_ctl"], "-D", str(data), "-m", "immediate", "-w", "-t", "60", "stop", check=False)
        shutil.rmtree(base, ignore_errors=True)


def grade_class(root: Path, db_url: str | None) -> dict:
    course = tiny_course(root)   # the release students got
    if db_url:  # that step used SQLite: start the PostgreSQL course without it
        course.path("gradebook.db").unlink()
    folder = root.parent / f"{root.name}-submissions"
    for student, overrides in SUBMISSIONS.items():
        nb = course.read("exercises", ASSIGNMENT, f"{NOTEBOOK}.ipynb") if overrides == "release" \
            else solved(course, ASSIGNMENT, NOTEBOOK, overrides)
        (folder / student).mkdir(parents=True)
        nbformat.write(nb, folder / student / f"{NOTEBOOK}.ipynb")
    settings = Settings(cell_timeout=5, budget=60, workers=2, db_url=db_url, feedback=False,
                        limits=Limits(memory_mb=1536, processes=40, cpu_seconds=60))
    rows = grade_batch(root, ASSIGNMENT, folder, settings, progress=False)
    return {r["student"]: r for r in rows}


def outcome(rows: dict) -> dict:
    return {s: (r["status"], r.get("score"), r.get("parts")) for s, r in rows.items()}


def test_postgres_gradebook_gives_the_same_grades_as_sqlite(tmp_path, postgres_url):
    ensure_debian_packages(["bubblewrap"], ["bwrap"])
    pg_rows = grade_class(tmp_path / "pg", postgres_url)
    sqlite_rows = grade_class(tmp_path / "sqlite", None)

    assert outcome(pg_rows) == outcome(sqlite_rows)
    full = sum(POINTS.values())
    expected = {"ada": full, "bo": full - POINTS["test_add"], "cy": 0, "di": full - POINTS["test_mean"], "flo": full}
    assert {s: pg_rows[s]["score"] for s in expected} == expected, outcome(pg_rows)
    assert pg_rows["ed"]["status"] == "failed" and "kernel died" in pg_rows["ed"]["reason"], pg_rows["ed"]

    from nbgrader.api import Gradebook
    with Gradebook(postgres_url, "dlcourse") as gb:  # the grades really are in PostgreSQL
        assert sorted(s.id for s in gb.students) == sorted(SUBMISSIONS)
        scores = {s: gb.find_submission(ASSIGNMENT, s).score for s in expected}
    assert scores == expected
    assert not (tmp_path / "pg" / "gradebook.db").exists(), "the PostgreSQL run must not write an SQLite gradebook"
