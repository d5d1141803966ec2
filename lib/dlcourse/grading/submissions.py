"""Intake: submissions as an LMS hands them out, checked before anything runs.

A submission is a zip file or a folder, and each top-level entry of it is one student:

    <student>/<notebook>.ipynb               a folder per student (<student>/timestamp.txt if known)
    <student>/<assignment>/<notebook>.ipynb  nbgrader's submitted/ after `nbgrader collect`: exactly
                                             this depth; then only that folder is read (in the course's
                                             own submitted/, a student without it is not in this one)
    <student>_<ids>_<notebook>.ipynb         a flat LMS export (the student is the part before the
                                             first _, numeric ids and a LATE marker are dropped)

Nothing inside an entry names another student. Only the assignment's files are taken: the
notebooks at the top of the student's folder and timestamp.txt (a student with no notebook
there gets the notebooks found deeper in their own folder, when their names are unique); every
other file is listed in a note, never read. An id is a name nbgrader and the file system both
take (`student_id`): NFC Unicode letters, marks, digits and ._@+-_. `__MACOSX` and dot files at the
top are the archiver's, not students. An entry that cannot be taken (no id, a symbolic link or
other special file, a file over MAX_FILE_MB, a student over MAX_SUBMISSION_MB, a damaged zip
member, nothing to grade) is rejected with a reason for its own row, and the batch goes on.
Sizes are checked from stat() or the zip's directory before anything is read, links are never
followed, and reading stops at the cap (a zip member's declared size is not trusted).

`intake` returns an Intake ({student: Submission} and {entry: reason}); the bytes are stored
unmodified in submitted/. `collect` is the all-or-nothing form: {student: {file name: bytes}}, or
a ValueError for the first entry that cannot be taken.
Whether each notebook can be graded is validation.py's question.
"""
import hashlib
import os
import re
import stat
import unicodedata
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

MAX_FILE_MB = 50          # one file of a submission (as stat() or the zip's directory says)
MAX_SUBMISSION_MB = 100   # all the files of one student's entry together
MAX_ENTRIES = 2000        # files and folders in one student's entry
MAX_ID_CHARS, MAX_ID_BYTES = 100, 200   # a folder name must fit in 255 bytes with ".forked.log" added
ID_SYMBOLS = "._@+-_"
FLAT_PREFIX = re.compile(r"^((\d+|LATE)_)+")  # the LMS's submission ids and late marker before the file name
TIMESTAMP = "timestamp.txt"
LISTED = 5                # file names a note lists before "and N more"


class Rejected(ValueError):
    """An entry of the export that cannot be taken; the message is the reason in its row."""


@dataclass
class Submission:
    """One student's files as taken, what the instructor should know about them, and the folder
    they were read from (None for a zip): `plan.store` leaves that folder alone when it is its target."""
    files: dict[str, bytes] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    origin: Path | None = None


@dataclass
class Intake:
    """Every top-level entry of an export: a Submission per student, or why it was rejected
    (keyed by the student id, or by the entry's name shown safely when it is no id)."""
    students: dict[str, Submission] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)


def student_id(name: str) -> str:
    """The id a top-level name stands for: its NFC form, made of Unicode letters, marks and digits
    and ._@+-_ only, starting with a letter or digit, at most 100 characters (200 bytes of UTF-8).
    That keeps out path separators, dot names, spaces, control and format characters, and what
    nbgrader reads as a glob (* ? [ ]) or a list (,). Rejected (a ValueError) says why not."""
    sid = unicodedata.normalize("NFC", name)
    ok = (sid and unicodedata.category(sid[0])[0] in "LN" and len(sid) <= MAX_ID_CHARS
          and all(unicodedata.category(c)[0] in "LMN" or c in ID_SYMBOLS for c in sid)
          and len(sid.encode("utf-8", "surrogatepass")) <= MAX_ID_BYTES)
    if not ok:
        raise Rejected(f"cannot read a student id from {name!r}: ids are letters, digits and {ID_SYMBOLS}, "
                       f"start with a letter or digit and have at most {MAX_ID_CHARS} characters")
    return sid


def plain_name(name: str) -> str:
    """A file name `plan.store` may write: one path component, no dot name, no control characters."""
    if (not name or name.startswith(".") or "/" in name or "\\" in name or len(name.encode("utf-8", "surrogatepass")) > 200
            or any(unicodedata.category(c)[0] == "C" for c in name)):
        raise Rejected(f"{name!r} is not a plain file name")
    return name


def shown(name: str) -> str:
    """An entry's name as its row shows it when it is no id: control characters and undecodable
    bytes escaped, at most 100 characters, and never a spreadsheet formula (= + - @ first)."""
    text = "".join(ascii(c)[1:-1] if unicodedata.category(c)[0] == "C" else c for c in name)[:MAX_ID_CHARS]
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def _mb(n: float) -> str:
    return f"{n / 2**20:.0f} MB" if n >= 2**20 else f"{n} bytes"


def _listing(names) -> str:
    names = sorted(names)
    more = f" and {len(names) - LISTED} more" if len(names) > LISTED else ""
    return ", ".join(repr(n) for n in names[:LISTED]) + more


def _junk(part: str) -> bool:
    """The archiver's, not a student's: __MACOSX, .DS_Store, .ipynb_checkpoints (never '..')."""
    return part == "__MACOSX" or part.startswith(".") and not part.startswith("..")


@dataclass
class _Entry:
    """A student's entry as found, before anything is read: relative path -> size, and a reader."""
    members: dict[PurePosixPath, int]
    read: object               # read(relative path, limit) -> bytes
    origin: Path | None = None


def _choose(entry: _Entry, notebooks: set[str], flat: bool, caps: tuple[float, float]) -> Submission:
    """What to take from one student's entry (checked against the caps first), read with a bound."""
    file_cap, total_cap = caps
    for rel, size in entry.members.items():
        if size > file_cap * 2**20:
            raise Rejected(f"{str(rel)!r} is {_mb(size)}, over the cap of {file_cap:g} MB per file; nothing was read")
    total = sum(entry.members.values())
    if total > total_cap * 2**20:
        raise Rejected(f"the submission is {_mb(total)}, over the cap of {total_cap:g} MB per student; nothing was read")
    visible = [r for r in entry.members if not any(_junk(p) for p in r.parts)]
    taken: dict[str, PurePosixPath] = {}
    notes = []
    for rel in sorted(visible):
        name = _flat_name(rel.name, notebooks) if flat else rel.name
        if len(rel.parts) == 1 and (name.endswith(".ipynb") or name == TIMESTAMP):
            if name in taken:
                notes.append(f"several files are {name!r}: {str(rel)!r} was taken")
            taken[name] = rel
    if not any(n.endswith(".ipynb") for n in taken):   # a folder of their own, e.g. an unpacked zip
        deeper = [r for r in visible if len(r.parts) > 1 and r.suffix == ".ipynb"]
        count = Counter(r.name for r in deeper)
        for rel in deeper:
            if count[rel.name] == 1:
                taken[rel.name] = rel
                notes.append(f"{str(rel)!r} graded as the student's {rel.name!r}")
    ignored = [str(r) for r in visible if r not in taken.values()]
    if ignored:
        notes.append(f"ignored (only the assignment's notebooks and {TIMESTAMP} are taken): {_listing(ignored)}")
    files = {}
    for name, rel in sorted(taken.items()):
        plain_name(name)
        files[name] = entry.read(rel, int(file_cap * 2**20))
    if not files:
        raise Rejected("nothing to grade: no notebook in the submission" + (f" ({notes[-1]})" if notes else ""))
    return Submission(files, notes, entry.origin)


def _flat_name(file_name: str, notebooks: set[str]) -> str:
    """The notebook a flat export's file is: alice_12345_convolution.ipynb -> convolution.ipynb,
    alice_LATE_12345_67890_convolution-1.ipynb -> convolution-1.ipynb."""
    rest = file_name.partition("_")[2]
    return next((f"{nb}.ipynb" for nb in sorted(notebooks) if rest.endswith(f"_{nb}.ipynb") or rest == f"{nb}.ipynb"),
                FLAT_PREFIX.sub("", rest))


def _read_path(path: Path, limit: int) -> bytes:
    """At most `limit` bytes of a regular file, never through a link (else Rejected)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise Rejected(f"{path.name!r} cannot be read ({e.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise Rejected(f"{path.name!r} is not a regular file")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise Rejected(f"{path.name!r} grew past {_mb(limit)} while it was read")
    return data


def _walk(folder: Path) -> dict[PurePosixPath, int]:
    """Every regular file under `folder` (relative path -> size from lstat), links not followed:
    a link or another special file anywhere inside rejects the entry, as do more than MAX_ENTRIES."""
    found, todo, seen = {}, [folder], 0
    while todo:
        with os.scandir(todo.pop()) as it:
            for e in it:
                seen += 1
                if seen > MAX_ENTRIES:
                    raise Rejected(f"more than {MAX_ENTRIES} files and folders in the submission")
                rel = PurePosixPath(Path(e.path).relative_to(folder).as_posix())
                if e.is_symlink():
                    raise Rejected(f"{str(rel)!r} is a symbolic link: links are not followed, submit the file itself")
                if e.is_dir(follow_symlinks=False):
                    todo.append(Path(e.path))
                elif e.is_file(follow_symlinks=False):
                    found[rel] = e.stat(follow_symlinks=False).st_size
                else:
                    raise Rejected(f"{str(rel)!r} is not a regular file or folder")
    return found


def _folder_entries(source: Path, assignment: str | None, collected: bool = False):
    """(top-level name, _Entry or Rejected, flat) for each entry of a folder export; `collected`:
    of nbgrader's submitted/, where only <student>/<assignment>/ folders are this assignment's."""
    for e in sorted(os.scandir(source), key=lambda e: e.name):
        path = Path(e.path)
        inner = path / assignment if assignment else None
        if collected and not (e.is_symlink() or inner.is_symlink() or inner.is_dir()):
            continue   # a student who handed in other assignments only, or a stray file
        try:
            if e.is_symlink() or collected and inner.is_symlink():
                raise Rejected(f"{e.name!r} is a symbolic link: links are not followed")
            if e.is_dir(follow_symlinks=False):
                if inner is not None and inner.is_dir() and not inner.is_symlink():
                    path = inner   # nbgrader's layout: its <assignment>/ folder is the submission
                yield e.name, _Entry(_walk(path), lambda rel, limit, top=path: _read_path(top / rel, limit), path), False
            elif e.is_file(follow_symlinks=False):
                size = e.stat(follow_symlinks=False).st_size
                yield e.name, _Entry({PurePosixPath(e.name): size}, lambda rel, limit: _read_path(source / rel, limit)), True
            else:
                raise Rejected(f"{e.name!r} is not a regular file or folder")
        except Rejected as why:
            yield e.name, why, False
        except OSError as error:
            yield e.name, Rejected(f"{e.name!r} cannot be read ({error.strerror or error})"), False


def _zip_entries(zf: zipfile.ZipFile, assignment: str | None):
    """(top-level name, _Entry or Rejected, flat) for each entry of a zip export."""
    groups: dict[str, list] = {}
    for info in zf.infolist():
        parts = [p for p in info.filename.replace("\\", "/").split("/") if p not in ("", ".")]
        if parts:
            top = parts[0] if ".." not in parts[:1] else info.filename
            groups.setdefault(top, []).append((parts[1:], info))
    for top, members in sorted(groups.items()):
        flat = all(not rest and not info.is_dir() for rest, info in members)
        try:
            if ".." in [p for rest, _ in members for p in rest]:
                raise Rejected(f"a path inside {top!r} goes up (..)")
            if not flat and assignment and any(rest[:1] == [assignment] and len(rest) > 1 for rest, _ in members):
                members = [(rest[1:], info) for rest, info in members if rest[:1] == [assignment]]
            files = {}
            for rest, info in members:
                if info.is_dir():
                    continue
                rel = PurePosixPath(*rest) if rest else PurePosixPath(top)
                if stat.S_ISLNK(info.external_attr >> 16):
                    raise Rejected(f"{str(rel)!r} is a symbolic link: links are not followed, submit the file itself")
                files[rel] = max(files.get(rel, 0), info.file_size)
                if len(files) > MAX_ENTRIES:
                    raise Rejected(f"more than {MAX_ENTRIES} files in the submission")
            infos = {PurePosixPath(*rest) if rest else PurePosixPath(top): info for rest, info in members}
            yield top, _Entry(files, lambda rel, limit, infos=infos: _read_member(zf, infos[rel], limit)), flat
        except Rejected as why:
            yield top, why, flat


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    """At most `limit` bytes of a zip member, whatever its header declares (a zip bomb stops here)."""
    try:
        with zf.open(info) as f:
            data = f.read(limit + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, OSError) as e:
        raise Rejected(f"{info.filename!r} cannot be read from the zip ({e})") from None
    if len(data) > limit:
        raise Rejected(f"{info.filename!r} unpacks to more than {_mb(limit)}")
    return data


def intake(source: str | Path, notebooks: list[str], assignment: str | None = None, *, collected: bool = False,
           max_file_mb: float = MAX_FILE_MB, max_submission_mb: float = MAX_SUBMISSION_MB) -> Intake:
    """Read a zip or a folder of submissions: a Submission for each student, a reason for each entry
    that cannot be taken. With `assignment`, nbgrader's own layout <student>/<assignment>/<file>
    (what `nbgrader collect` makes) is read too; `collected`: `source` is the course's submitted/
    itself, whose students without an <assignment>/ folder did not hand this one in."""
    source = Path(source)
    if collected and not assignment:
        raise ValueError("reading nbgrader's submitted/ needs the assignment")
    if source.is_dir():
        entries = list(_folder_entries(source, assignment, collected))
        return _take(entries, set(notebooks), (max_file_mb, max_submission_mb))
    if zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as zf:
            return _take(list(_zip_entries(zf, assignment)), set(notebooks), (max_file_mb, max_submission_mb))
    raise ValueError(f"submissions must be a zip file or a folder, got {source}")


def _take(entries: list, notebooks: set[str], caps: tuple[float, float]) -> Intake:
    """Group the top-level entries by student (several flat files may be one student's; anything
    else that names a student twice is rejected) and take each student's files."""
    found, by_student = Intake(), {}
    for top, entry, flat in entries:
        if _junk(top):
            continue
        try:
            if flat and "_" not in top:
                raise Rejected(f"cannot read a student id from {top!r}: a file at the top of the export must be "
                               "named <student>_<ids>_<notebook>.ipynb")
            sid = student_id(top.partition("_")[0] if flat else top)
        except Rejected as why:
            found.rejected[shown(top)] = str(why)
            continue
        by_student.setdefault(sid, []).append((top, entry, flat))
    for sid, mine in by_student.items():
        try:
            if len(mine) > 1 and not all(flat for *_, flat in mine):
                raise Rejected(f"several entries of the export are this student's: {_listing(t for t, *_ in mine)}")
            for _, entry, _ in mine:
                if isinstance(entry, Rejected):
                    raise entry
            entry = mine[0][1] if len(mine) == 1 else _Entry(
                {rel: size for _, e, _ in mine for rel, size in e.members.items()},
                lambda rel, limit, readers={rel: e.read for _, e, _ in mine for rel in e.members}: readers[rel](rel, limit))
            found.students[sid] = _choose(entry, notebooks, mine[0][2], caps)
        except Rejected as why:
            found.rejected[sid] = str(why)
    return found


def collect(source: str | Path, notebooks: list[str], assignment: str | None = None) -> dict[str, dict[str, bytes]]:
    """All or nothing: {student: {file name: bytes}} of every entry, or a ValueError with the reason
    of the first entry (by name) that cannot be taken. `intake` grades what it can instead."""
    found = intake(source, notebooks, assignment)
    if found.rejected:
        raise ValueError(found.rejected[min(found.rejected)])
    return {sid: sub.files for sid, sub in found.students.items()}


def digest(files: dict[str, bytes]) -> str:
    """sha256 over a student's file names and contents (re-grading is skipped when it is unchanged)."""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return h.hexdigest()
