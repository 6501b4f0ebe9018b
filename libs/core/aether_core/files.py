"""Files out of an LLM reply, and the path rules that keep them inside the task's workspace.

Experts are asked (templates.OUTPUT_FORMAT) to put every file in a fenced block whose info string
names it: ```` ```python path=app/main.py ````. The reply is untrusted text, so:

- a path is accepted only if it is relative, `/`-separated, portable and harmless (`check_path`:
  no `..`, no absolute or drive paths, no `.git`, no device names such as `CON` or `NUL`, no
  control or invisible characters, no link syntax); anything else is refused with its reason;
- a block that never closes (a reply cut off mid-file) is refused, not committed half-written;
- sizes are bounded per file, per reply and in count;
- fences nest the way LLMs write them (a Markdown file with its own ```` ```bash ```` blocks
  inside a ```` ``` ```` block), and fall back to CommonMark's rule when the nesting does not
  balance.

A reply without files is a valid text result. `Extraction.text` is the reply with every accepted
file's body replaced by a one-line note, so task state and prompts carry the prose and the files
live in the workspace; refused blocks stay in the text as the expert wrote them.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from dataclasses import dataclass, field

from aether_contracts.workspace import RefusedFile

from .prompting import frame

MAX_PATH_BYTES = 512
MAX_COMPONENT_BYTES = 255
MAX_DEPTH = 32
MAX_FENCE_INDENT = 12
"""LLMs indent fences inside list items; CommonMark's 3 spaces would miss those files."""

_DEVICE = re.compile(r"^(con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³]|conin\$|conout\$|clock\$)$", re.I)
_NOT_PORTABLE = set('<>:"|?*')
_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_INFO_PATH = re.compile(r"""(?:^|\s)(?:path|file|filename)\s*=\s*(?:"([^"]*)"|'([^']*)'|(\S+))""")
_LINK_WORDS = re.compile(r"(?:^|\s)(?:symlink|link|hardlink)(?:\s*=|\s|$)", re.I)


@dataclass(frozen=True)
class FileLimits:
    max_file_bytes: int = 1_000_000
    max_files: int = 200
    max_total_bytes: int = 8_000_000


class UnsafePath(ValueError):
    """A path that must not be written; the message is the reason, for the task log."""


def check_path(raw: str) -> str:
    """The normalised form of a relative file path, or `UnsafePath` saying why it is refused."""
    if not isinstance(raw, str):
        raise UnsafePath("not a string")
    path = raw.strip()
    if not path:
        raise UnsafePath("empty path")
    for char in path:
        category = unicodedata.category(char)
        if char == "\x00":
            raise UnsafePath("contains a NUL byte")
        if category == "Cc":
            raise UnsafePath(f"contains the control character U+{ord(char):04X}")
        if category in ("Cf", "Co", "Cs", "Cn", "Zl", "Zp"):
            raise UnsafePath(f"contains the invisible or invalid character U+{ord(char):04X}")
    if "\\" in path:
        raise UnsafePath("contains a backslash (use '/' between directories)")
    if path.startswith("/"):
        raise UnsafePath("absolute path")
    if re.match(r"^[A-Za-z]:", path):
        raise UnsafePath("absolute Windows path (drive letter)")
    if "->" in path:
        raise UnsafePath("looks like a symbolic link (links are never created)")
    if path.endswith("/"):
        raise UnsafePath("names a directory, not a file")
    path = unicodedata.normalize("NFC", path)
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts:
        raise UnsafePath("names no file")
    if parts[0].startswith("~"):  # after normalising: `./~` is `~` (found by Hypothesis)
        raise UnsafePath("home-relative path")
    if len(parts) > MAX_DEPTH:
        raise UnsafePath(f"more than {MAX_DEPTH} directories deep")
    for part in parts:
        if part == "..":
            raise UnsafePath("contains '..' (it would leave the workspace)")
        if part.casefold().rstrip(". ") in (".git", "git~1"):
            raise UnsafePath("is inside .git")
        if len(part.encode()) > MAX_COMPONENT_BYTES:
            raise UnsafePath(f"a name is longer than {MAX_COMPONENT_BYTES} bytes")
        if part != part.strip() or part.endswith("."):
            raise UnsafePath(f"the name {part!r} ends or starts with a space or ends with a dot")
        bad = _NOT_PORTABLE.intersection(part)
        if bad:
            raise UnsafePath(f"contains {''.join(sorted(bad))!r}, which is not portable")
        if _DEVICE.match(part.split(".")[0].rstrip(" ")):
            raise UnsafePath(f"{part!r} is a device name on Windows")
    normal = "/".join(parts)
    if len(normal.encode()) > MAX_PATH_BYTES:
        raise UnsafePath(f"longer than {MAX_PATH_BYTES} bytes")
    return normal


def shown(raw: str, limit: int = 200) -> str:
    """A hostile path made safe to log and display: control characters escaped, cut."""
    text = "".join(
        c if unicodedata.category(c)[0] != "C" else f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}"
        for c in raw[: limit * 2]
    )
    return text if len(text) <= limit else text[:limit] + "…"


@dataclass(frozen=True)
class ExtractedFile:
    path: str
    content: bytes
    language: str = ""

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


@dataclass
class Extraction:
    files: list[ExtractedFile] = field(default_factory=list)
    refused: list[RefusedFile] = field(default_factory=list)
    text: str = ""


@dataclass
class _Block:
    start: int
    """Line index of the opening fence."""
    end: int | None
    """Line index of the closing fence; None: never closed."""
    indent: int
    info: str


def _fence(line: str) -> tuple[int, str, str] | None:
    match = _FENCE.match(line.rstrip("\r"))
    if not match or len(match.group("indent")) > MAX_FENCE_INDENT:
        return None
    fence, info = match.group("fence"), match.group("info")
    if fence[0] == "`" and "`" in info:
        return None  # CommonMark: a backtick fence's info string has no backticks
    return len(match.group("indent")), fence, info.strip()


def _blocks(lines: list[str]) -> list[_Block]:
    blocks: list[_Block] = []
    i = 0
    while i < len(lines):
        opened = _fence(lines[i])
        if opened is None:
            i += 1
            continue
        indent, fence, info = opened
        depth, first_bare, end, next_file = 0, None, None, None
        j = i + 1
        while j < len(lines):
            inner = _fence(lines[j])
            if inner is not None and inner[1][0] == fence[0] and len(inner[1]) >= len(fence):
                if _info_path(inner[2]) is not None:
                    next_file = j  # another file starts: this block was left open
                    break
                if inner[2]:
                    depth += 1  # an opening fence inside: a nested block (a README's examples)
                elif depth:
                    depth -= 1
                    first_bare = j if first_bare is None else first_bare
                else:
                    end = j
                    break
            j += 1
        if end is None and next_file is None and first_bare is not None:
            end = first_bare  # the nesting never balanced: close where CommonMark closes
        blocks.append(_Block(i, end, indent, info))
        if next_file is not None:
            i = next_file
        else:
            i = (end if end is not None else len(lines)) + 1
    return blocks


def _body(lines: list[str], block: _Block) -> str:
    assert block.end is not None
    body = []
    for line in lines[block.start + 1 : block.end]:
        line = line.rstrip("\r")
        strip = min(block.indent, len(line) - len(line.lstrip(" ")))
        body.append(line[strip:])
    return "\n".join(body) + "\n" if body else ""


def _info_path(info: str) -> str | None:
    match = _INFO_PATH.search(info)
    if not match:
        return None
    return next(g for g in match.groups() if g is not None)


def _parents(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:n]) for n in range(1, len(parts))]


def _clash(path: str, accepted: dict, directories: set[str]) -> str | None:
    """An accepted file that `path` would turn into a directory, or that lives under `path`."""
    for parent in _parents(path):
        if parent in accepted:
            return parent
    if path in directories:
        return next(p for p in accepted if p.startswith(path + "/"))
    return None


def extract_files(reply: str, limits: FileLimits = FileLimits()) -> Extraction:
    lines = reply.split("\n")
    result = Extraction()
    accepted: dict[str, tuple[ExtractedFile, _Block]] = {}
    directories: set[str] = set()
    total = 0
    replaced: dict[int, str] = {}
    for block in _blocks(lines):
        raw = _info_path(block.info)
        if raw is None:
            continue  # an ordinary code block: part of the text
        language = block.info.split()[0] if block.info.split() and "=" not in block.info.split()[0] else ""

        def refuse(reason: str, raw: str = raw) -> None:
            result.refused.append(RefusedFile(path=shown(raw), reason=reason))

        if _LINK_WORDS.search(_INFO_PATH.sub(" ", block.info)):
            refuse("declared as a link (links are never created)")
            continue
        try:
            path = check_path(raw)
        except UnsafePath as exc:
            refuse(str(exc))
            continue
        if block.end is None:
            refuse("the code block is never closed (the reply may have been cut off)")
            continue
        try:
            content = _body(lines, block).encode("utf-8")
        except UnicodeEncodeError:
            refuse("the content is not valid Unicode")
            continue
        if b"\x00" in content:
            refuse("the content contains NUL bytes (only text files are accepted)")
            continue
        if len(content) > limits.max_file_bytes:
            refuse(f"{len(content)} bytes, over the limit of {limits.max_file_bytes} per file")
            continue
        clash = _clash(path, accepted, directories)
        if clash is not None:
            refuse(f"clashes with {clash!r} in the same reply (a file cannot also be a directory)")
            continue
        previous = accepted.get(path)
        earlier = len(previous[0].content) if previous else 0
        if len(accepted) - (1 if previous else 0) >= limits.max_files:
            refuse(f"over the limit of {limits.max_files} files per reply")
            continue
        if total - earlier + len(content) > limits.max_total_bytes:
            refuse(f"the reply's files would exceed {limits.max_total_bytes} bytes in total")
            continue
        if previous is not None:
            del accepted[path]
            refuse("written again later in the same reply; the later version is kept")
        total += len(content) - earlier
        accepted[path] = (ExtractedFile(path, content, language), block)
        directories.update(_parents(path))

    for file, block in accepted.values():
        count = file.content.count(b"\n")
        note = f"[file {file.path}: {count} line(s), {len(file.content)} bytes, stored in the task's workspace]"
        replaced[block.start] = note
        for index in range(block.start + 1, (block.end or block.start) + 1):
            replaced[index] = ""
    result.files = [file for file, _ in accepted.values()]
    kept = [replaced.get(i, line) for i, line in enumerate(lines)]
    result.text = "\n".join(line for i, line in enumerate(kept) if not (i in replaced and replaced[i] == ""))
    return result


def write_inside(root: str, path: str, content: bytes) -> None:
    """Write `content` at `path` under the directory `root`, never outside it.

    The path is checked again, and every directory is opened relative to its parent without
    following symbolic links, so a link planted anywhere in the tree (or a race that plants one)
    makes the write fail instead of escaping `root`.
    """
    parts = check_path(path).split("/")
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    fd = os.open(root, flags)
    try:
        for part in parts[:-1]:
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
            except FileExistsError:
                pass
            try:
                child = os.open(part, flags, dir_fd=fd)
            except (NotADirectoryError, OSError) as exc:
                raise UnsafePath(f"{part!r} on the way to {path!r} is not a directory: {exc.strerror}") from exc
            os.close(fd)
            fd = child
        try:
            out = os.open(parts[-1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644, dir_fd=fd)
        except OSError as exc:
            raise UnsafePath(f"{path!r} cannot be written: {exc.strerror}") from exc
        with os.fdopen(out, "wb") as handle:
            handle.write(content)
    finally:
        os.close(fd)


def fence_for(content: str) -> str:
    """A backtick fence longer than any backtick run in `content`, so the block cannot break."""
    longest = max((len(run) for run in re.findall(r"`+", content)), default=0)
    return "`" * max(3, longest + 1)


def quote_file(path: str, content: bytes, limit: int, heading: str, *, nonce: str, written_by: str) -> str:
    """A file for a prompt: a heading, then its text in a fenced block, cut at `limit` characters
    with a visible marker, framed as data with the prompt's `nonce` (aether_core.prompting); a
    file that is not UTF-8 text is named, not shown."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        return f"{heading}\n[binary content, {len(content)} bytes, not shown]"
    shown_text = text
    marker = ""
    if len(text) > limit:
        shown_text = text[:limit]
        marker = (
            f"\n[… truncated by Aether: {len(text) - limit} more characters of {path}; "
            "the whole file is in the workspace]"
        )
    fence = fence_for(shown_text)
    body = shown_text if shown_text.endswith("\n") or not shown_text else shown_text + "\n"
    block = frame("file", f"{fence} path={path}\n{body}{fence}", nonce, path=path, written_by=written_by)
    return f"{heading}\n{block}{marker}"
