"""Run: what of a kernel's output a graded notebook keeps (OutputCap) and what its log keeps (LogTap).

OutputCap counts a cell's output as it arrives and, past the per-cell and per-notebook caps,
drops stdout and displays, keeps what nbgrader scores by short, and notes how much was not kept.
LogTap copies the first bytes of the kernel's own stdout and stderr to the grader's log.
"""
import os
import threading

from nbformat.v4 import new_output

# --- output caps: what a notebook keeps of a submission's output, and what reaches the log ---
OUTPUT_KINDS = ("stream", "display_data", "execute_result", "error", "update_display_data")
STUB_CHARS, STUBS = 1000, 20   # past the cap, an error, stderr or result is kept this short, this many per cell
TRUNCATED = "output truncated: {dropped:,} bytes not kept (the grader keeps {cell} per cell and {notebook} per notebook)"


def output_bytes(obj) -> int:
    """Bytes of the text and data in (part of) a message: the UTF-8 of every string, binary lengths."""
    total, todo = 0, [obj]
    while todo:
        x = todo.pop()
        if isinstance(x, str):
            total += len(x) if x.isascii() else len(x.encode("utf-8", "surrogatepass"))
        elif isinstance(x, dict):
            todo += [*x.keys(), *x.values()]
        elif isinstance(x, (list, tuple)):
            todo += x
        elif isinstance(x, (bytes, bytearray)):
            total += len(x)
    return total


def _head(text: str, nbytes: int) -> str:
    """The longest start of `text` that is at most `nbytes` bytes of UTF-8."""
    if text.isascii():
        return text[:nbytes]
    return text.encode("utf-8", "surrogatepass")[:nbytes].decode("utf-8", "ignore")


def short_error(content: dict) -> dict:
    """An error's name, value and traceback as a stub keeps them (first and last traceback lines)."""
    tb = [str(line) for line in content.get("traceback", [])]
    tb = tb if len(tb) <= 2 else [tb[0], "... traceback truncated ...", tb[-1]]
    return {"ename": _head(str(content.get("ename", "")), STUB_CHARS // 4),
            "evalue": _head(str(content.get("evalue", "")), STUB_CHARS),
            "traceback": [_head(line, STUB_CHARS // 2) for line in tb]}


def _size_text(n: float) -> str:
    return "no limit" if n == float("inf") else f"{n / 2**20:g} MB" if n >= 2**20 else f"{n:,} bytes"


class OutputCap:
    """What one notebook keeps of its output, decided as each IOPub message arrives (`admit`), so
    a flood never piles up in the grader: output that fits the bytes left for its cell and for the
    notebook is kept exactly as it came; past them stdout (the part that fits) and displays are
    dropped, while what nbgrader scores by (an error, stderr, the result) is kept shortened to
    STUB_CHARS, STUBS per cell. A cell that lost output shows TRUNCATED (`show`). Cleared output
    (clear_output) gives its bytes back; an update of a display counts what it adds. Widget state
    (stored in the notebook's metadata) counts against the notebook's bytes: an update that does
    not fit is dropped. `client` is the NotebookClient whose notebook this is."""

    def __init__(self, cell_bytes: int, notebook_bytes: int, client):
        self.cell_max = float("inf") if cell_bytes < 0 else cell_bytes
        self.nb_max = float("inf") if notebook_bytes < 0 else notebook_bytes
        self.client, self.nb, self.nb_kept, self.cell = client, client.nb, 0, None

    def _start(self, cell) -> None:
        self.cell, self.cell_kept, self.dropped, self.stubs, self.note, self.clear_pending = cell, 0, 0, 0, None, False

    def _clear(self) -> None:
        self.nb_kept -= self.cell_kept
        self.cell_kept, self.stubs, self.clear_pending = 0, 0, False

    def admit(self, msg: dict, cell) -> dict | None:
        """The message to handle: itself while it fits, a shortened copy, or None (dropped)."""
        if cell is not self.cell:
            self._start(cell)
        kind, content = msg["msg_type"], msg["content"]
        if kind in ("comm_open", "comm_msg"):
            return self._widget_state(msg)
        if kind == "clear_output":
            if content.get("wait"):
                self.clear_pending = True
            else:
                self._clear()
            return msg
        if kind not in OUTPUT_KINDS:
            return msg
        if self.clear_pending and kind != "update_display_data":   # nbclient clears before this output
            self._clear()
        if kind == "stream":
            size = output_bytes(content.get("text", ""))
        elif kind == "error":
            size = output_bytes(content)
        else:   # measured as _displayed measures what an update replaces
            size = output_bytes(content.get("data", {})) + output_bytes(content.get("metadata", {}))
        cost = 0 if kind == "update_display_data" else size
        display_id = (content.get("transient") or {}).get("display_id") if kind != "stream" else None
        if display_id:
            count, now = self._displayed(display_id)
            cost += size * count - now
        room = min(self.cell_max - self.cell_kept, self.nb_max - self.nb_kept)
        if cost <= room:
            self.cell_kept += cost
            self.nb_kept += cost
            return msg
        return self._shorten(msg, kind, content, size, max(0, int(room)))

    def _displayed(self, display_id: str) -> tuple[int, int]:
        """How many outputs show `display_id`, and their bytes now (an update replaces them all)."""
        count = size = 0
        for index, positions in self.client._display_id_map.get(display_id, {}).items():
            outputs = self.nb.cells[index].outputs
            for p in positions:
                if p < len(outputs):
                    count += 1
                    size += output_bytes(outputs[p].get("data", {})) + output_bytes(outputs[p].get("metadata", {}))
        return count, size

    def _widget_state(self, msg: dict) -> dict | None:
        """A widget's state as nbclient stores it (keys updated, buffers base64 by path): kept while
        what it adds fits the notebook's bytes left."""
        content = msg["content"]
        data = content.get("data")
        state = data.get("state") if isinstance(data, dict) else None
        if not isinstance(state, dict):
            return msg
        old = self.client.widget_state.get(content.get("comm_id"), {})
        old_buffers = self.client.widget_buffers.get(content.get("comm_id"), {})
        added = sum(output_bytes(v) - (output_bytes(old[k]) if k in old else -output_bytes(k)) for k, v in state.items())
        added += sum(memoryview(b).nbytes * 4 // 3 for b in msg.get("buffers") or [])
        added -= sum(output_bytes(old_buffers.get(tuple(p), {})) for p in data.get("buffer_paths") or []
                     if isinstance(p, list))
        if added <= self.nb_max - self.nb_kept:
            self.nb_kept += added
            return msg
        self.dropped += added
        return None

    def _shorten(self, msg: dict, kind: str, content: dict, size: int, room: int) -> dict | None:
        keep = None
        if kind == "stream":
            n = room
            if content.get("name") == "stderr" and n < STUB_CHARS and self.stubs < STUBS:
                n, self.stubs = STUB_CHARS, self.stubs + 1
            if n > 0:
                keep = {**content, "text": _head(str(content.get("text", "")), n)}
        elif kind in ("execute_result", "error") and self.stubs < STUBS:
            self.stubs += 1
            if kind == "execute_result":
                plain = str(content.get("data", {}).get("text/plain", ""))
                keep = {"data": {"text/plain": _head(plain, STUB_CHARS)}, "metadata": {},
                        "execution_count": content.get("execution_count")}
            else:
                keep = short_error(content)
        kept = output_bytes(keep.get("text", "")) if kind == "stream" and keep else output_bytes(keep) if keep else 0
        counted = min(kept, room) if kind == "stream" else 0   # a stub is bounded by STUBS, not by the budget
        self.cell_kept += counted
        self.nb_kept += counted
        self.dropped += max(0, size - kept)
        return None if keep is None else {**msg, "content": keep}

    def show(self, cell) -> None:
        """The note in `cell` that says how many bytes of its output were not kept (a display:
        nbgrader's LimitOutput drops stream lines, never this; it scores nothing)."""
        if cell is not self.cell or not self.dropped:
            return
        text = TRUNCATED.format(dropped=self.dropped, cell=_size_text(self.cell_max), notebook=_size_text(self.nb_max))
        if self.note is None or not any(o is self.note for o in cell.outputs):
            self.note = new_output("display_data", data={"text/plain": text}, metadata={})
            cell.outputs.append(self.note)
        else:
            self.note["data"]["text/plain"] = text


class LogTap:
    """A pipe for the kernel's own stdout and stderr (what it writes to its file descriptors,
    not the notebook's output): the first `limit` bytes go on to `fd` (the grader's log), the rest
    is counted and dropped, and a last line says how much. Copied by a thread until every
    writer (the kernel and its children) has closed its end."""

    def __init__(self, fd: int, limit: int):
        self.read_fd, self.write_fd = os.pipe()
        self.out, self.limit = os.dup(fd), limit
        threading.Thread(target=self._copy, daemon=True, name="kernel-log").start()

    def _write(self, data: bytes) -> None:
        while data:
            data = data[os.write(self.out, data):]

    def _copy(self) -> None:
        kept = dropped = 0
        try:
            while chunk := os.read(self.read_fd, 2**16):
                room = max(0, self.limit - kept)
                self._write(chunk[:room])
                kept += min(room, len(chunk))
                dropped += len(chunk) - min(room, len(chunk))
            if dropped:
                self._write(f"\n[grader] the kernel wrote {dropped:,} more bytes to its stdout/stderr: not kept\n".encode())
        except OSError:
            pass
        finally:
            os.close(self.read_fd)
            os.close(self.out)
