"""The experts' tools on a real directory: paths stay inside, bad input is an error the model
reads (never an exception), and what they write is what a commit takes."""

import json
import os

import pytest

from aether_core.sandbox import SandboxLimits, Unavailable
from aether_executor.tools import TOOL_NAMES, TOOLS, Toolbox


@pytest.fixture
def box(tmp_path):
    root = tmp_path / "work"
    root.mkdir()
    (root / "app").mkdir()
    (root / "app" / "main.py").write_text("print('hello')\n")
    return Toolbox(root, Unavailable("no sandbox in this test"), SandboxLimits())


def args(**values) -> str:
    return json.dumps(values)


def test_the_tool_contract_is_the_documented_one():
    assert TOOL_NAMES == {"list_files", "read_file", "write_file", "edit_file", "run_command"}
    for tool in TOOLS:
        schema = tool["function"]["parameters"]
        assert tool["type"] == "function" and schema["type"] == "object" and set(schema["required"]) <= set(schema["properties"])


async def test_write_read_edit_and_list(box):
    written = await box.call("write_file", args(path="pkg/util.py", content="X = 1\nY = 2\n"))
    assert written.ok and written.changed == ["pkg/util.py"] and "created" in written.text
    assert (box.root / "pkg" / "util.py").read_text() == "X = 1\nY = 2\n"
    edited = await box.call("edit_file", args(path="pkg/util.py", old="Y = 2", new="Y = 3"))
    assert edited.ok and (box.root / "pkg" / "util.py").read_text() == "X = 1\nY = 3\n"
    read = await box.call("read_file", args(path="pkg/util.py"))
    assert read.ok and read.text == "X = 1\nY = 3\n"
    (box.root / ".git").write_text("gitdir: /elsewhere/worktrees/a\n")  # as in a git worktree
    listing = await box.call("list_files", args(path="."))
    assert listing.ok and "app/main.py  15 bytes" in listing.text and "pkg/util.py" in listing.text
    assert ".git" not in listing.text


@pytest.mark.parametrize(
    ("name", "raw", "says"),
    [
        ("delete_everything", args(path="/"), "unknown tool"),
        ("write_file", '{"path": "x.py", "content": ', "not valid JSON"),
        ("write_file", "[1, 2]", "must be a JSON object"),
        ("read_file", args(), "bad arguments for read_file"),
        ("write_file", args(path="x.py", content="a", mode="755"), "bad arguments for write_file"),
        ("write_file", args(path="../../escape.txt", content="owned"), "contains '..'"),
        ("write_file", args(path="/etc/passwd", content="owned"), "absolute path"),
        ("write_file", args(path=".git/hooks/pre-commit", content="owned"), "inside .git"),
        ("write_file", args(path="bin.dat", content="a\u0000b"), "NUL"),
        ("write_file", args(path="big.txt", content="x" * 1_000_001), "at most 1000000"),
        ("read_file", args(path="nope.py"), "cannot be read"),
        ("edit_file", args(path="app/main.py", old="absent", new="x"), "occurs 0 times"),
        ("edit_file", args(path="app/main.py", old="", new="x"), "must not be empty"),
        ("list_files", args(path="nowhere"), "is not a directory"),
        ("run_command", args(command=""), "non-empty"),
        ("run_command", args(command="ls"), "never run unsandboxed"),
    ],
)
async def test_bad_input_is_an_error_the_model_reads(box, name, raw, says):
    result = await box.call(name, raw)
    assert not result.ok and result.text.startswith("error: ") and says in result.text, result.text
    assert not (box.root.parent / "escape.txt").exists()


async def test_links_planted_in_the_worktree_lead_nowhere(box, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("the NATS password")
    os.symlink(secret, box.root / "link.txt")
    os.symlink(tmp_path, box.root / "outside")
    for name, raw in (("read_file", args(path="link.txt")), ("read_file", args(path="outside/secret.txt")),
                      ("write_file", args(path="outside/new.txt", content="x")), ("edit_file", args(path="link.txt", old="NATS", new="x"))):
        result = await box.call(name, raw)
        assert not result.ok and "the NATS password" not in result.text, (name, result.text)
    assert secret.read_text() == "the NATS password" and not (tmp_path / "new.txt").exists()
    listing = await box.call("list_files", args(path="."))
    assert "link.txt  " in listing.text and "(link)" in listing.text and "secret.txt" not in listing.text


async def test_binary_files_are_not_shown_and_long_ones_are_cut_visibly(box):
    (box.root / "blob.bin").write_bytes(b"\x00\x01\x02")
    assert "binary file" in (await box.call("read_file", args(path="blob.bin"))).text
    (box.root / "long.txt").write_text("y" * 70_000)
    read = await box.call("read_file", args(path="long.txt"))
    assert read.ok and "[… cut by Aether: 70000 bytes in all; read on with offset=64000]" in read.text
    rest = await box.call("read_file", args(path="long.txt", offset=64_000))
    assert rest.text == "y" * 6000
