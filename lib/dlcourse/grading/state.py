"""Record: the batch's memory of every student's row: what a rerun or a resumed batch starts from.

    state = StateLog(out / "state.json")     # loads and compacts: state.json + the log replayed
    state.save("alice", row)                 # one line appended to state.log: O(1) per student
    state.compact()                          # state.json rewritten in full, the log emptied

`state.json` holds {student: row} as of the last compaction (the format a reader of a finished
batch sees); `state.log` holds one JSON line {"student": ..., "row": ...} per row saved since then,
appended and flushed as soon as the row is known, so a crash or Ctrl-C loses nothing. A batch
compacts when it loads and when it ends (also when interrupted). Saving a row no longer rewrites
every other row (which made a batch of n students write O(n^2) bytes). A last line cut short by
a crash is ignored: that student is graded again, as before a row was saved.
"""
import json
import os
from pathlib import Path


def read_state(path: Path) -> dict:
    """{student: row}: state.json with its log (state.log beside it) replayed, read only."""
    path = Path(path)
    state = json.loads(path.read_text()) if path.exists() else {}
    log = path.with_suffix(".log")
    if log.exists():
        with open(log, "rb") as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except ValueError:   # a line cut short by a crash: the student is graded again
                    continue
                if isinstance(entry, dict) and "student" in entry:
                    state[entry["student"]] = entry["row"]
    return state


class StateLog(dict):
    """{student: row}, loaded from `path` (state.json) and its log; `save` appends, `compact` rewrites."""

    def __init__(self, path: Path):
        super().__init__(read_state(path))
        self.path = Path(path)
        self.log_path = self.path.with_suffix(".log")
        self._log = None
        self.compact()

    def save(self, student: str, row: dict) -> None:
        """Keep `row` for `student`, in memory and as one line at the end of the log."""
        self[student] = row
        if self._log is None:
            self._log = open(self.log_path, "a", encoding="utf-8")
        self._log.write(json.dumps({"student": student, "row": row}, sort_keys=True) + "\n")
        self._log.flush()

    def compact(self) -> None:
        """state.json rewritten with every row (atomically), then the log emptied."""
        if self._log is not None:
            self._log.close()
            self._log = None
        if self or self.path.exists():
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(dict(self), indent=1, sort_keys=True))
            os.replace(tmp, self.path)
        if self.log_path.exists():
            self.log_path.unlink()
