"""Who may read what of the course on the teaching server (dlcourse.hub applies it): the
instructor's parts of the course closed to its owner, an allow-list of what students read of the
checkout and of the course directory, private homes, passwords PAM can check, nbgrader's exchange,
and the solution lines that must never reach a student.
"""
import os
import pwd
import re
import stat
from pathlib import Path


PRIVATE = ("solutions", "submitted", "autograded", "feedback", "grades")  # and the gradebook


def protect_course(course: Path) -> None:
    """Keep the instructor's parts of the course (hidden tests, students' work, grades, the SQLite
    gradebook) to the course's owner: folders 0700, created now if missing (nbgrader would create
    them later with the umask's 0755), the SQLite gradebook 0600 (an empty file is a valid empty
    database: created now, SQLite keeps its mode). The rest (exercises, lectures, the library and
    its Python) stays readable: every user's server runs from it."""
    owner = course.stat()
    for name in PRIVATE:
        folder = course / name
        if not folder.exists():
            folder.mkdir()
            os.chown(folder, owner.st_uid, owner.st_gid)
        folder.chmod(0o700)
    gradebook = course / "gradebook.db"
    if not gradebook.exists():
        gradebook.touch(mode=0o600)
        os.chown(gradebook, owner.st_uid, owner.st_gid)
    for db in course.glob("gradebook.db*"):
        db.chmod(0o600)


# What other users may read of the checkout and of the course directory: everything their servers,
# kernels and the lectures need. Anything else at the top of those folders (.git, solutions/, tests/,
# benchmarks/, students' work, the gradebook, .jupyter-state/ with its screenshots, a backup the
# instructor left there) is closed: an allow-list, so that what nobody thought of stays private.
PUBLIC = frozenset({
    ".venv",                    # the course's Python: every user's server runs from it
    "lib",                      # the library (its reference twins, imported by the lectures)
    "lectures", "exercises",    # the lectures and the release (no solutions: tests/test_project.py)
    "hub", "jupyter",           # the servers' settings (nbgrader, JupyterLab)
    "START.md", "README.md", "Makefile", "pyproject.toml", "environment.yml", "nbgrader_config.py",
})


def close_course(folder: Path, public: frozenset[str] = PUBLIC) -> list[Path]:
    """Remove group's and others' access to every entry at the top of `folder` that is not in
    `public` (symbolic links are left alone: chmod would change what they point to); the folder
    itself stays open. Returns what was closed."""
    closed = []
    for entry in sorted(folder.iterdir()):
        if entry.name in public or entry.is_symlink():
            continue
        mode = stat.S_IMODE(entry.lstat().st_mode)
        if mode & 0o077:
            entry.chmod(mode & ~0o077)
            closed.append(entry)
    return closed


def close_home(account: str) -> bool:
    """Make `account`'s home private (0700) if it belongs to the account and others can open it
    (`useradd` without HOME_MODE=0700 makes it 0755). True if it was changed."""
    try:
        home = Path(pwd.getpwnam(account).pw_dir)
        info = home.stat()
    except (KeyError, OSError):
        return False
    if not home.is_dir() or info.st_uid != pwd.getpwnam(account).pw_uid or not info.st_mode & 0o077:
        return False
    home.chmod(stat.S_IMODE(info.st_mode) & ~0o077)
    return True


SECRET_MARKERS = re.compile(r"(BEGIN|END) (SOLUTION|HIDDEN TESTS)")


def secret_lines(solutions: Path, public_text: str, shortest: int = 30) -> set[str]:
    """What must not reach a student: every line of 'shortest' characters or more inside the
    ### BEGIN SOLUTION / BEGIN HIDDEN TESTS blocks of the source notebooks under `solutions`,
    as written in the notebook, in its JSON file and in HTML, less the forms found in
    `public_text` (the release, the lectures and the library legitimately share some lines)."""
    import html
    import json

    lines = set()
    for path in sorted(solutions.glob("*/*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            inside = False
            source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
            for line in source.splitlines():
                marker = SECRET_MARKERS.search(line)
                if marker:
                    inside = marker.group(1) == "BEGIN"
                elif inside and len(line.strip()) >= shortest:
                    lines.add(line.strip())
    forms = {form for line in lines for form in (line, json.dumps(line)[1:-1], html.escape(line))}
    return {form for form in forms if form not in public_text}


def has_password(account: str, shadow: Path = Path("/etc/shadow")) -> bool:
    """Whether `account` has a password PAM can check: its /etc/shadow entry is neither empty,
    nor locked ("!..."), nor "*". True where the file cannot be read (not root: no opinion), and
    False for an account that is not in it (the hub creates students later, without one)."""
    try:
        lines = shadow.read_text().splitlines()
    except OSError:
        return True
    for line in lines:
        fields = line.split(":")
        if fields[0] == account and len(fields) > 1:
            return bool(fields[1]) and not fields[1].startswith(("!", "*"))
    return False


def prepare_exchange(path: Path) -> None:
    """nbgrader's exchange: a folder everyone can write into (0777, as nbgrader checks), with the
    sticky bit, so that only a file's owner may delete or rename it."""
    path.mkdir(parents=True, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) != 0o1777:
        path.chmod(0o1777)
