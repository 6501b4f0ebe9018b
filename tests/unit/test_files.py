"""The parser of expert replies into files, and the path rules, over well-formed and hostile input."""

import os
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aether_core.files import FileLimits, UnsafePath, check_path, extract_files, write_inside


def block(path: str, body: str, lang: str = "python", fence: str = "```") -> str:
    return f"{fence}{lang} path={path}\n{body}\n{fence}"


# -- well-formed replies ------------------------------------------------------------------------


def test_files_in_fenced_blocks_are_extracted_and_the_prose_is_kept():
    reply = "\n".join(
        [
            "Here is the service.",
            block("app/main.py", "from fastapi import FastAPI\napp = FastAPI()"),
            "And its schema:",
            block("db/schema.sql", "CREATE TABLE t (id int);", "sql"),
            "```bash",
            "uvicorn app.main:app",
            "```",
        ]
    )
    out = extract_files(reply)
    assert [(f.path, f.content, f.language) for f in out.files] == [
        ("app/main.py", b"from fastapi import FastAPI\napp = FastAPI()\n", "python"),
        ("db/schema.sql", b"CREATE TABLE t (id int);\n", "sql"),
    ]
    assert out.refused == []
    assert "Here is the service." in out.text and "And its schema:" in out.text
    assert "uvicorn app.main:app" in out.text, "ordinary code blocks stay in the text"
    assert "FastAPI()" not in out.text, "file bodies live in the workspace, not in the text"
    assert "[file app/main.py: 2 line(s), 44 bytes, stored in the task's workspace]" in out.text


def test_a_reply_without_files_is_a_plain_text_result():
    reply = "No code was needed: the existing endpoint already does this.\n```\nGET /items\n```"
    out = extract_files(reply)
    assert out.files == [] and out.refused == []
    assert out.text == reply


@pytest.mark.parametrize(
    "info",
    ["python path=a/b.py", 'python path="a/b.py"', "python path='a/b.py'", "path=a/b.py", "python  path = a/b.py", "python file=a/b.py"],
)
def test_info_string_variants(info):
    out = extract_files(f"```{info}\nx = 1\n```")
    assert [f.path for f in out.files] == ["a/b.py"]


def test_quoted_paths_may_contain_spaces_and_unicode_is_normalised():
    out = extract_files('```text path="docs/read me.md"\nhi\n```\n```text path=cafe\u0301.txt\nhi\n```')
    assert [f.path for f in out.files] == ["docs/read me.md", "caf\u00e9.txt"]


def test_a_markdown_file_with_its_own_code_blocks_nests():
    reply = "\n".join(
        ["```markdown path=README.md", "# App", "```bash", "make run", "```", "Done.", "```", "after"]
    )
    out = extract_files(reply)
    assert out.files[0].content == b"# App\n```bash\nmake run\n```\nDone.\n"
    assert out.text.splitlines()[-1] == "after"


def test_longer_fences_and_tildes_nest_the_commonmark_way():
    reply = "````markdown path=README.md\n```\nraw\n```\n````\n~~~python path=x.py\n```\n~~~"
    out = extract_files(reply)
    assert [(f.path, f.content) for f in out.files] == [
        ("README.md", b"```\nraw\n```\n"),
        ("x.py", b"```\n"),
    ]


def test_fences_indented_in_a_list_item_are_read_and_dedented():
    reply = "1. Create the app:\n\n    ```python path=app.py\n    def f():\n        return 1\n    ```\n"
    out = extract_files(reply)
    assert out.files[0].content == b"def f():\n    return 1\n"


def test_crlf_replies_give_lf_files():
    out = extract_files("```python path=a.py\r\nx = 1\r\ny = 2\r\n```\r\n")
    assert out.files[0].content == b"x = 1\ny = 2\n"


def test_an_empty_file_is_a_file():
    out = extract_files("```text path=.keep\n```")
    assert [(f.path, f.content) for f in out.files] == [(".keep", b"")]


def test_the_same_path_twice_keeps_the_later_version_and_says_so():
    out = extract_files(block("a.py", "one") + "\n" + block("a.py", "two"))
    assert [(f.path, f.content) for f in out.files] == [("a.py", b"two\n")]
    assert [r.reason for r in out.refused] == ["written again later in the same reply; the later version is kept"]


# -- hostile replies ----------------------------------------------------------------------------

HOSTILE = {
    "../../etc/passwd": "'..'",
    "app/../../x": "'..'",
    "/etc/passwd": "absolute path",
    "C:/Windows/system32/x": "drive letter",
    "c:evil": "drive letter",
    "..\\..\\boot.ini": "backslash",
    "~/.ssh/authorized_keys": "home-relative",
    "./~/.ssh/authorized_keys": "home-relative",
    ".git/hooks/post-checkout": ".git",
    "sub/.GIT/config": ".git",
    ".git./config": ".git",
    "GIT~1/config": ".git",
    "CON": "device name",
    "nul.txt": "device name",
    "a/Com1.py": "device name",
    "LPT9": "device name",
    "a\x00b.py": "NUL",
    "a\nb.py": "control character",
    "a\u202eyp.exe": "invisible",
    "a\u200b/.git/x": "invisible",
    "link -> /etc/passwd": "symbolic link",
    "a/": "directory",
    "./": "directory",
    ".": "names no file",
    "a/./": "directory",
    "trailing.": "ends with a dot",
    "what?.py": "not portable",
    "x" * 300: "longer than 255",
    "/".join(["d"] * 40) + "/f": "deep",
}


@pytest.mark.parametrize("path", list(HOSTILE))
def test_hostile_paths_are_refused_with_a_reason(path):
    with pytest.raises(UnsafePath) as caught:
        check_path(path)
    assert HOSTILE[path] in str(caught.value)
    if "\n" in path:
        return  # a newline ends the info string: the block is read differently, below
    out = extract_files(f'```python path="{path}"\nboom\n```\n' + block("ok.py", "fine"))
    assert [f.path for f in out.files] == ["ok.py"]
    [refusal] = out.refused
    assert HOSTILE[path] in refusal.reason
    assert "\x00" not in refusal.path and "\u202e" not in refusal.path, "refused paths are safe to show"
    assert "boom" in out.text, "a refused block stays in the text: nothing is lost"


def test_declared_links_are_refused():
    out = extract_files("```text path=passwd symlink=/etc/passwd\nx\n```")
    assert out.files == [] and "link" in out.refused[0].reason


def test_an_unterminated_block_is_refused_not_committed_half_written():
    out = extract_files(block("a.py", "ok") + "\n```python path=b.py\ndef f(:\n    cut off mid-")
    assert [f.path for f in out.files] == ["a.py"]
    assert out.refused[0].path == "b.py" and "never closed" in out.refused[0].reason
    assert "cut off mid-" in out.text


def test_a_block_left_open_before_the_next_file_is_refused_and_the_next_file_kept():
    out = extract_files("```python path=a.py\nhalf\n```python path=b.py\nwhole\n```")
    assert [f.path for f in out.files] == ["b.py"]
    assert out.refused[0].path == "a.py"


def test_nul_bytes_in_content_are_refused():
    out = extract_files(block("a.bin", "\x00\x01"))
    assert out.files == [] and "NUL" in out.refused[0].reason


def test_lone_surrogates_in_content_are_refused():
    out = extract_files(block("a.txt", "\ud800"))
    assert out.files == [] and "Unicode" in out.refused[0].reason


def test_a_file_and_a_directory_of_the_same_name_clash():
    out = extract_files(block("app", "x") + "\n" + block("app/main.py", "y"))
    assert [f.path for f in out.files] == ["app"]
    assert "clashes with 'app'" in out.refused[0].reason


def test_huge_files_and_totals_and_counts_are_bounded():
    limits = FileLimits(max_file_bytes=1000, max_files=3, max_total_bytes=2500)
    reply = "\n".join(
        [
            block("huge.txt", "x" * 5000),
            block("a.txt", "a" * 900),
            block("b.txt", "b" * 900),
            block("c.txt", "c" * 900),
            block("d.txt", "d"),
            block("e.txt", "e"),
            block("f.txt", "f"),
        ]
    )
    out = extract_files(reply, limits)
    assert [f.path for f in out.files] == ["a.txt", "b.txt", "d.txt"]
    reasons = {r.path: r.reason for r in out.refused}
    assert "5001 bytes, over the limit of 1000" in reasons["huge.txt"]
    assert "exceed 2500 bytes in total" in reasons["c.txt"]
    assert "over the limit of 3 files" in reasons["e.txt"] and "over the limit of 3 files" in reasons["f.txt"]


def test_a_ten_megabyte_reply_parses_and_its_file_is_refused():
    out = extract_files(block("big.txt", "y" * 10_000_000))
    assert out.files == [] and "over the limit" in out.refused[0].reason


# -- properties ---------------------------------------------------------------------------------

SAFE_NAME = st.text(alphabet=string.ascii_letters + string.digits + "_-", min_size=1, max_size=12)
SAFE_PATH = st.lists(SAFE_NAME, min_size=1, max_size=4).map("/".join).filter(lambda p: not any(
    part.upper().split(".")[0] in ("CON", "PRN", "AUX", "NUL") or part.upper()[:3] in ("COM", "LPT")
    for part in p.split("/")
))
BODY_LINE = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r\n`~"), max_size=40)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(SAFE_PATH, st.lists(BODY_LINE, max_size=6)), max_size=6, unique_by=lambda t: t[0]), st.lists(BODY_LINE, max_size=3))
def test_well_formed_replies_round_trip(files, prose):
    paths = [p for p, _ in files]
    if any(a != b and b.startswith(a + "/") for a in paths for b in paths):
        return  # a file and a directory of one name: refused by design, tested above
    reply = "\n".join(prose)
    for path, lines in files:
        reply += "\n" + block(path, "\n".join(lines), lang="text") if lines else f"\n```text path={path}\n```"
    out = extract_files(reply)
    expected = {p: ("\n".join(lines) + "\n" if lines else "").encode() for p, lines in files}
    assert {f.path: f.content for f in out.files} == expected
    assert out.refused == []


HOSTILE_PIECES = st.sampled_from(["..", ".", "", "/", "\\", "\x00", "C:", "~", ".git", "CON", "nul.txt", "a", "b.py", " ", "\u202e", "\n", "->", "```", "path="])


@settings(max_examples=500)
@given(st.lists(HOSTILE_PIECES | st.text(max_size=5), max_size=8).map("/".join))
def test_any_accepted_path_stays_inside_the_workspace(raw):
    try:
        path = check_path(raw)
    except UnsafePath:
        return
    assert check_path(path) == path, "normalisation is stable"
    root = Path("/workspace/root")
    resolved = Path(os.path.normpath(root / path))
    assert resolved.is_relative_to(root) and resolved != root
    assert not path.startswith("/") and ".." not in path.split("/") and "\\" not in path
    assert ".git" not in [p.casefold() for p in path.split("/")]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(["```", "~~~", "````", "python", " path=", "a.py", "../x", "\n", "x", " ", "/", "\x00"]), max_size=60).map("".join))
def test_any_reply_parses_within_its_limits(reply):
    limits = FileLimits(max_file_bytes=40, max_files=2, max_total_bytes=60)
    out = extract_files(reply, limits)
    assert len(out.files) <= 2
    assert sum(len(f.content) for f in out.files) <= 60
    assert len({f.path for f in out.files}) == len(out.files)
    for file in out.files:
        assert check_path(file.path) == file.path and len(file.content) <= 40


# -- writing on disk ----------------------------------------------------------------------------


def test_write_inside_creates_directories_and_writes(tmp_path):
    write_inside(str(tmp_path), "a/b/c.txt", b"hello")
    assert (tmp_path / "a/b/c.txt").read_bytes() == b"hello"


def test_write_inside_never_follows_a_planted_symlink(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (root / "app").symlink_to(outside)
    (root / "file.txt").symlink_to(outside / "target.txt")
    with pytest.raises(UnsafePath):
        write_inside(str(root), "app/main.py", b"x")
    with pytest.raises(UnsafePath):
        write_inside(str(root), "file.txt", b"x")
    assert list(outside.iterdir()) == []


def test_write_inside_refuses_unsafe_paths_itself(tmp_path):
    for bad in ("../x", "/etc/x", ".git/config"):
        with pytest.raises(UnsafePath):
            write_inside(str(tmp_path), bad, b"x")
    assert list(tmp_path.iterdir()) == []
