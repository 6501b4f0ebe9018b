"""The parser of expert replies into files, and the path rules, over well-formed and hostile input."""

import os
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aether_core.files import (
    FileLimits,
    UnsafePath,
    check_path,
    extract_files,
    looks_like_file,
    write_inside,
)


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


# -- files named without path= (issue 12: how real models write them) ---------------------------


def only_file(reply: str):
    out = extract_files(reply)
    assert out.refused == [], out.refused
    [file] = out.files
    return file


@pytest.mark.parametrize(
    "info, path, language",
    [
        ('python title="app.py"', "app.py", "python"),
        ("python title=app.py", "app.py", "python"),
        ("python name=app.py", "app.py", "python"),
        ("app.py", "app.py", ""),
        ("python app/main.py", "app/main.py", "python"),
        ("python:app/main.py", "app/main.py", "python"),
        ("tsx src/components/Button.tsx", "src/components/Button.tsx", "tsx"),
        ("dockerfile Dockerfile", "Dockerfile", "dockerfile"),
        ("yaml .github/workflows/ci.yml", ".github/workflows/ci.yml", "yaml"),
        ('python hl_lines="1 2" title="main.py"', "main.py", "python"),
        ("{.python title=app/main.py}", "app/main.py", "python"),
    ],
)
def test_a_file_named_in_the_info_string(info, path, language):
    file = only_file(f"Here it is:\n\n```{info}\nx = 1\n```\n")
    assert (file.path, file.content, file.named_by, file.language) == (path, b"x = 1\n", "info", language)


@pytest.mark.parametrize("info", ["python path=a/b.py", "python file=a/b.py", "python filename=a/b.py", "{.python filename=a/b.py}"])
def test_path_and_its_old_synonyms_are_recorded_as_path_equals(info):
    assert only_file(f"```{info}\nx = 1\n```").named_by == "path="


@pytest.mark.parametrize(
    "language, first_line, path",
    [
        ("python", "# file: app.py", "app.py"),
        ("python", "# app.py", "app.py"),
        ("python", "# Filename: app/models.py", "app/models.py"),
        ("tsx", "// app.tsx", "app.tsx"),
        ("tsx", "// File: src/App.tsx", "src/App.tsx"),
        ("sql", "-- schema.sql", "schema.sql"),
        ("html", "<!-- index.html -->", "index.html"),
        ("css", "/* styles.css */", "styles.css"),
        ("jsx", "{/* src/App.jsx */}", "src/App.jsx"),
        ("ini", "; setup.cfg", "setup.cfg"),
        ("yaml", "# docker-compose.yml", "docker-compose.yml"),
        ("dockerfile", "# Dockerfile", "Dockerfile"),
        ("", "# requirements.txt", "requirements.txt"),
        ("markdown", "<!-- docs/index.md -->", "docs/index.md"),
    ],
)
def test_a_file_named_by_a_comment_on_its_first_line_keeps_the_comment(language, first_line, path):
    file = only_file(f"```{language}\r\n{first_line}\r\nbody\r\n```\r\n")
    assert (file.path, file.named_by) == (path, "comment")
    assert file.content == f"{first_line}\nbody\n".encode(), "the model expects its comment in the file"


def test_the_naming_comment_is_left_out_where_the_format_cannot_hold_it():
    package = only_file('```json\n// package.json\n{"name": "app"}\n```')
    assert (package.path, package.content) == ("package.json", b'{"name": "app"}\n'), "JSON has no comments"
    script = only_file("```bash\n# deploy.sh\n#!/usr/bin/env bash\necho hi\n```")
    assert script.content == b"#!/usr/bin/env bash\necho hi\n", "a #! line must come first"


@pytest.mark.parametrize(
    "first, second, path",
    [
        ("#!/usr/bin/env bash", "# scripts/deploy.sh", "scripts/deploy.sh"),
        ("<?php", "// public/index.php", "public/index.php"),
        ("<!DOCTYPE html>", "<!-- index.html -->", "index.html"),
    ],
)
def test_a_naming_comment_may_follow_a_line_that_must_come_first(first, second, path):
    file = only_file(f"```\n{first}\n{second}\nx\n```")
    assert (file.path, file.content) == (path, f"{first}\n{second}\nx\n".encode())


@pytest.mark.parametrize(
    "label",
    [
        "### app/main.py",
        "## `app/main.py`",
        "### 1. `app/main.py`",
        "#### File: app/main.py",
        "**app/main.py**",
        "**app/main.py:**",
        "**`app/main.py`**",
        "**File:** `app/main.py`",
        "`app/main.py`",
        "`app/main.py`:",
        "File: app/main.py",
        "Filename: app/main.py",
        "app/main.py:",
        "1. **app/main.py**",
        "- `app/main.py`",
        "* **app/main.py**",
    ],
)
@pytest.mark.parametrize("gap", ["\n", "\n\n", "\r\n\r\n"])
def test_a_file_named_by_the_line_before_its_fence(label, gap):
    out = extract_files(f"The service:\n\n{label}{gap}```python\nx = 1\n```\n")
    assert [(f.path, f.content, f.named_by) for f in out.files] == [("app/main.py", b"x = 1\n", "heading")]
    assert label in out.text, "the heading is prose and stays"


def test_a_heading_names_a_fence_indented_under_a_list_item():
    reply = "1. **app/main.py**\n   ```python\n   def f():\n       return 1\n   ```\n2. **app/db.py**\n   ```python\n   DB = 1\n   ```"
    out = extract_files(reply)
    assert [(f.path, f.content) for f in out.files] == [("app/main.py", b"def f():\n    return 1\n"), ("app/db.py", b"DB = 1\n")]


def test_path_equals_wins_over_every_other_name():
    file = only_file("### shown.py\n```python path=real.py title=title.py other.py\n# comment.py\nx\n```")
    assert (file.path, file.named_by) == ("real.py", "path=")
    assert only_file("```python file=a.py path=b.py\nx\n```").path == "b.py"


def test_the_info_string_wins_over_a_comment_and_a_comment_over_a_heading():
    assert only_file("### heading.py\n```python info.py\n# comment.py\nx\n```").path == "info.py"
    assert only_file("### heading.py\n```python\n# comment.py\nx\n```").path == "comment.py"


def test_a_heading_that_is_the_fuller_path_of_the_comment_wins():
    file = only_file("### app/main.py\n```python\n# main.py\nx\n```")
    assert (file.path, file.named_by, file.content) == ("app/main.py", "heading", b"# main.py\nx\n")


@pytest.mark.parametrize(
    "word",
    ["app.py", "app/main.py", "src/App.test.tsx", "Dockerfile", "docker/Dockerfile", "Makefile", ".env",
     ".env.example", ".gitignore", "requirements.txt", "docker-compose.yml", "café.txt", "__init__.py"],
)
def test_words_that_name_files(word):
    assert looks_like_file(word)


@pytest.mark.parametrize(
    "word",
    ["python", "bash", "Python", "dockerfile", "typescript", "c++", "objective-c", "python3", "v1.2.3", "3.11",
     "Node.js", "next.js", "example.com", "socket.io", "https://example.com/app.py", "e.g.", "...", "",
     "Here is app.py", "app.py,", "`app.py`", "License", "Readme", "-.py"],
)
def test_words_that_do_not(word):
    assert not looks_like_file(word)


@pytest.mark.parametrize(
    "reply",
    [
        "Here is the code:\n```python\nprint('hi')\n```",
        "Here is the code:\n\n```python\nimport os\n```",
        "Run it with `python app.py`:\n```python\nprint(1)\n```",
        "```python\n# Compute the totals\ntotal = 1\n```",
        "```python\nprint(1)  # app.py\n```",
        "```Dockerfile\nFROM python:3.12\n```",
        "```makefile\nall:\n\techo hi\n```",
        "```python 3.11\nprint(1)\n```",
        "```python {1,3-4}\nprint(1)\n```",
        '```python title="Example usage"\nprint(1)\n```',
        "**Python:**\n```python\nprint(1)\n```\n**Node.js:**\n```javascript\nconsole.log(1)\n```",
        "### Usage\n```\nGET /items\n```",
        "## License\n\n```\nMIT\n```",
        "See example.com:\n```\nhi\n```\n**example.com**\n```\nhi\n```",
        "Version:\n**v1.2.3**\n```\nchangelog\n```",
        "```markdown\n# main.py\nThe module that starts the service.\n```",
        "```text\nhttps://example.com/app.py\n```",
    ],
)
def test_a_block_without_a_recognisable_name_stays_prose(reply):
    out = extract_files(reply)
    assert out.files == [] and out.refused == []
    assert out.text == reply


@pytest.mark.parametrize(
    "reply",
    [
        "```diff app/main.py\n-a\n+b\n```",
        "```diff\n# app/main.py\n-a\n+b\n```",
        "### app/main.py\n```diff\n-a\n+b\n```",
        "```patch title=app/main.py\n-a\n+b\n```",
    ],
)
def test_a_diff_of_a_file_is_not_the_file(reply):
    assert extract_files(reply).files == []


@pytest.mark.parametrize(
    "reply",
    [
        "```bash\n$ pip install fastapi uvicorn\n$ uvicorn app.main:app --reload\n```",
        "```bash\n# Install the dependencies\n$ pip install -r requirements.txt\n```",
        "```console\n# setup.sh\npip install fastapi\n```",
        "**setup.sh**\n```bash\n$ pip install fastapi\n```",
        "```sh\n# install.sh\n$ make install\n```",
        "```python\n>>> from app.main import app\n>>> app.title\n'FastAPI'\n```",
        "**demo.py**\n```pycon\n>>> 1 + 1\n2\n```",
        "```powershell\n# setup.ps1\nPS C:\\app> pip install fastapi\n```",
        "`requirements.txt`:\n\n```bash\npip install -r requirements.txt\n```",
        "### app/main.py\n```bash\nuvicorn app.main:app\n```",
    ],
)
def test_shell_sessions_and_commands_do_not_become_files_unless_the_fence_names_them(reply):
    out = extract_files(reply)
    assert out.files == [] and out.refused == [] and out.text == reply


def test_a_shell_block_named_by_the_fence_or_naming_a_script_is_a_file():
    assert only_file("```bash path=install.sh\n$ pip install x\n```").path == "install.sh"
    assert only_file("```bash scripts/install.sh\n$ pip install x\n```").path == "scripts/install.sh"
    assert only_file("### scripts/run.sh\n```bash\nset -e\nuvicorn app.main:app\n```").path == "scripts/run.sh"
    assert only_file("**.env**\n```bash\nDATABASE_URL=postgres://db/app\n```").path == ".env"


def test_a_list_of_files_before_a_block_does_not_name_it():
    reply = "The project:\n\n- `app/main.py`\n- `app/models.py`\n\n```python\nprint('overview')\n```"
    assert extract_files(reply).files == []
    tree = "app/main.py\napp/models.py\n\n```python\nprint('overview')\n```"
    assert extract_files(tree).files == []


def test_a_markdown_file_named_by_a_heading_keeps_its_code_blocks():
    reply = "\n".join(
        ["### README.md", "", "```markdown", "# App", "", "```bash", "$ make run", "```", "", "Done.", "```", "", "after"]
    )
    file = only_file(reply)
    assert (file.path, file.content) == ("README.md", b"# App\n\n```bash\n$ make run\n```\n\nDone.\n")
    assert extract_files(reply).text.splitlines()[-1] == "after"


def test_a_block_named_by_a_heading_or_comment_that_never_closes_is_refused():
    out = extract_files("### a.py\n```python\nok = 1\n```\n**b.py**\n```python\ndef f(:\n    cut off mid-")
    assert [f.path for f in out.files] == ["a.py"]
    assert [(r.path, "never closed" in r.reason) for r in out.refused] == [("b.py", True)]
    out = extract_files("```python\n# c.py\ndef half(")
    assert out.files == [] and out.refused[0].path == "c.py" and "cut off" not in out.text


def test_the_same_path_in_two_forms_keeps_the_later_version_and_says_so():
    out = extract_files("### a.py\n```python\none\n```\n\n```python\n# a.py\ntwo\n```")
    assert [(f.path, f.content, f.named_by) for f in out.files] == [("a.py", b"# a.py\ntwo\n", "comment")]
    assert [r.reason for r in out.refused] == ["written again later in the same reply; the later version is kept"]


# Replies shaped as models wrote them when asked for a small service without being told the format.

CLAUDE_LIKE = """\
I'll create a small FastAPI service with an in-memory store.

**app/main.py**
```python
from fastapi import FastAPI

from app.models import Item

app = FastAPI()
ITEMS: list[Item] = []


@app.get("/items")
def list_items() -> list[Item]:
    return ITEMS
```

**app/models.py**
```python
from pydantic import BaseModel


class Item(BaseModel):
    name: str
```

**requirements.txt**
```
fastapi
uvicorn
```

To run it:

```bash
pip install -r requirements.txt
uvicorn app.main:app --reload
```

The `Item` model is shared by the routes.
"""

GPT_LIKE = """\
Sure! Here's a minimal implementation.

## Project structure

```
items/
├── app/
│   ├── __init__.py
│   └── main.py
├── package.json
└── Dockerfile
```

### 1. `app/main.py`

```python
from fastapi import FastAPI

app = FastAPI()
```

### 2. `package.json`

```json
// package.json
{
  "name": "items-ui",
  "private": true
}
```

### 3. `Dockerfile`

```dockerfile
FROM python:3.12-slim
COPY . /app
CMD ["uvicorn", "app.main:app"]
```

### Running

```bash
$ docker build -t items .
$ docker run -p 8000:8000 items
```

Let me know if you want tests!
"""

SMALL_MODEL_LIKE = """\
Here is the code.

```python
# app/main.py
from fastapi import FastAPI
app = FastAPI()
```

```sql
-- db/schema.sql
CREATE TABLE items (id SERIAL PRIMARY KEY, name TEXT);
```

```typescript:ui/src/api.ts
export const base = "/api";
```

```python
# Run with: uvicorn app.main:app
```
"""


def test_a_reply_with_bold_path_labels_as_claude_writes_it():
    out = extract_files(CLAUDE_LIKE)
    assert [(f.path, f.named_by) for f in out.files] == [
        ("app/main.py", "heading"),
        ("app/models.py", "heading"),
        ("requirements.txt", "heading"),
    ]
    assert out.refused == []
    assert dict((f.path, f.content) for f in out.files)["requirements.txt"] == b"fastapi\nuvicorn\n"
    assert "uvicorn app.main:app --reload" in out.text, "the commands to run it stay prose"
    assert "[file app/models.py: 5 line(s)" in out.text and "class Item" not in out.text


def test_a_reply_with_numbered_headings_and_a_tree_as_gpt_writes_it():
    out = extract_files(GPT_LIKE)
    files = {f.path: f for f in out.files}
    assert list(files) == ["app/main.py", "package.json", "Dockerfile"]
    assert files["package.json"].content.startswith(b"{\n"), "the // line would make it invalid JSON"
    assert files["Dockerfile"].content.startswith(b"FROM python:3.12-slim\n")
    assert out.refused == []
    assert "├── app/" in out.text and "$ docker build -t items ." in out.text


def test_a_reply_with_first_line_comments_as_a_small_local_model_writes_it():
    out = extract_files(SMALL_MODEL_LIKE)
    assert [(f.path, f.named_by) for f in out.files] == [
        ("app/main.py", "comment"),
        ("db/schema.sql", "comment"),
        ("ui/src/api.ts", "info"),
    ]
    assert out.files[0].content == b"# app/main.py\nfrom fastapi import FastAPI\napp = FastAPI()\n"
    assert "# Run with: uvicorn app.main:app" in out.text


def test_a_reply_mixing_every_form_with_crlf_line_endings():
    reply = "\r\n".join(
        [
            "Four files and a command.",
            "",
            "```python path=app/main.py",
            "import app.db",
            "```",
            "",
            "```python app/db.py",
            "DB = {}",
            "```",
            "",
            "```tsx",
            "// File: ui/src/App.tsx",
            "export default function App() { return null }",
            "```",
            "",
            "### `db/schema.sql`",
            "",
            "```sql",
            "CREATE TABLE items (id int);",
            "```",
            "",
            "```bash",
            "$ make run",
            "```",
            "",
        ]
    )
    out = extract_files(reply)
    assert [(f.path, f.named_by, f.content) for f in out.files] == [
        ("app/main.py", "path=", b"import app.db\n"),
        ("app/db.py", "info", b"DB = {}\n"),
        ("ui/src/App.tsx", "comment", b"// File: ui/src/App.tsx\nexport default function App() { return null }\n"),
        ("db/schema.sql", "heading", b"CREATE TABLE items (id int);\n"),
    ]
    assert out.refused == []
    assert all(b"\r" not in f.content for f in out.files)
    assert "$ make run" in out.text


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


HOSTILE_NAMED = {
    "../../etc/evil.py": "'..'",
    "app/../../evil.py": "'..'",
    "/etc/evil.py": "absolute path",
    "C:/Windows/evil.py": "drive letter",
    "a\\..\\..\\evil.py": "backslash",
    "~/.bashrc": "home-relative",
    ".git/hooks/evil.py": ".git",
    ".git": ".git",
    "CON.py": "device name",
    "nul.txt": "device name",
    "a\u202eyp.py": "invisible",
    "what?.py": "not portable",
    "a|b.py": "not portable",
    "x" * 300 + ".py": "longer than 255",
}
FORMS = {
    "info": "```python {path}\nboom\n```",
    "info-colon": "```python:{path}\nboom\n```",
    "title": '```python title="{path}"\nboom\n```',
    "comment": "```python\n# {path}\nboom\n```",
    "heading": "### {path}\n\n```python\nboom\n```",
    "bold": "**{path}**\n```python\nboom\n```",
    "backticks": "`{path}`:\n```python\nboom\n```",
}


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("path", list(HOSTILE_NAMED))
def test_hostile_paths_are_refused_in_every_form_with_a_reason(path, form):
    out = extract_files("Files:\n\n" + FORMS[form].format(path=path) + "\n\n" + block("ok.py", "fine"))
    assert [f.path for f in out.files] == ["ok.py"]
    [refusal] = out.refused
    assert HOSTILE_NAMED[path] in refusal.reason
    assert "\u202e" not in refusal.path, "refused paths are safe to show"
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


NAMED_PATH = st.tuples(
    SAFE_PATH.filter(lambda p: p.split("/")[-1][0].isalnum()), st.sampled_from(["py", "ts", "tsx", "sql", "md", "txt", "yaml", "toml", "css", "html", "json"])
).map(".".join) | st.sampled_from(["Dockerfile", "Makefile", ".env", "docker/Dockerfile", "web/.gitignore"])
PLAIN_LINE = st.text(alphabet=string.ascii_letters + string.digits + " =()+,'\"", max_size=30)
FORM = st.sampled_from(["path=", "info", "info-colon", "title", "comment", "heading", "bold", "backticks"])
COMMENT_FOR = {"py": "#", "ts": "//", "tsx": "//", "sql": "--", "css": "/*", "html": "<!--"}


def written(path: str, form: str, lines: list[str]) -> tuple[str, bytes, str]:
    """A file as a model writes it in `form`, the content it must give, and its `named_by`."""
    body = "\n".join(lines) + "\n" if lines else ""
    fence = lambda info: f"```{info}\n{body}```"  # noqa: E731
    if form == "path=":
        return fence(f"text path={path}"), body.encode(), "path="
    if form in ("info", "info-colon", "title"):
        info = {"info": f"text {path}", "info-colon": f"text:{path}", "title": f'text title="{path}"'}[form]
        return fence(info), body.encode(), "info"
    if form == "comment":
        opener = COMMENT_FOR.get(path.rpartition(".")[2], "#")
        closer = {"/*": " */", "<!--": " -->"}.get(opener, "")
        comment = f"{opener} {path}{closer}"
        kept = "" if path.endswith(".json") else comment + "\n"
        return f"```\n{comment}\n{body}```", (kept + body).encode(), "comment"
    label = {"heading": f"### {path}", "bold": f"**{path}**", "backticks": f"`{path}`:"}[form]
    return f"{label}\n\n" + fence("text"), body.encode(), "heading"


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(NAMED_PATH, FORM, st.lists(PLAIN_LINE, max_size=4)), max_size=6, unique_by=lambda t: t[0]),
    st.booleans(),
)
def test_files_in_any_form_round_trip(files, crlf):
    paths = [p for p, _, _ in files]
    if any(a != b and b.startswith(a + "/") for a in paths for b in paths):
        return  # a file and a directory of one name: refused by design
    parts, expected = ["Here are the files:"], {}
    for path, form, lines in files:
        text, content, named_by = written(path, form, lines)
        parts += ["", text]
        expected[path] = (content, named_by)
    reply = "\n".join(parts) + "\n"
    out = extract_files(reply.replace("\n", "\r\n") if crlf else reply)
    assert {f.path: (f.content, f.named_by) for f in out.files} == expected
    assert out.refused == []


LANGUAGES = st.sampled_from(
    ["", "python", "py", "bash", "sh", "shell", "console", "text", "json", "yaml", "sql", "tsx", "typescript",
     "javascript", "dockerfile", "Dockerfile", "makefile", "Makefile", "toml", "ini", "html", "css", "c", "c++",
     "objective-c", "go", "rust", "markdown", "diff", "python3", "jsx", "env", "nginx"]
)
SENTENCE = st.tuples(st.lists(st.sampled_from(["Here", "is", "the", "code", "app.py", "`main.py`", "file", "run"]), min_size=2, max_size=6)).map(lambda t: " ".join(t[0]) + ":")
UNNAMED_LINE = st.text(alphabet=string.ascii_letters + string.digits + " =()+,.:_'\"", max_size=30)


@settings(max_examples=300)
@given(LANGUAGES, SENTENCE, st.lists(UNNAMED_LINE, max_size=5))
def test_a_block_named_by_nothing_but_its_language_is_never_a_file(language, sentence, lines):
    reply = f"{sentence}\n\n```{language}\n" + "".join(line + "\n" for line in lines) + "```\n"
    out = extract_files(reply)
    assert out.files == [] and out.refused == [] and out.text == reply


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.sampled_from(
            ["```", "~~~", "python", "bash", " ", "\n", "\r\n", "### ", "**", "`", ":", "# ", "// ", "-- ", "<!-- ", " -->",
             "$ ", "title=", "file: ", "a.py", "b/c.ts", "../x.py", "/etc/x.sh", ".git", "CON.txt", "Dockerfile", "x"]
        ),
        max_size=60,
    ).map("".join)
)
def test_any_reply_in_any_form_parses_within_its_limits_and_paths(reply):
    limits = FileLimits(max_file_bytes=40, max_files=2, max_total_bytes=60)
    out = extract_files(reply, limits)
    assert len(out.files) <= 2 and sum(len(f.content) for f in out.files) <= 60
    assert len({f.path for f in out.files}) == len(out.files)
    for file in out.files:
        assert check_path(file.path) == file.path and len(file.content) <= 40
        assert file.named_by in ("path=", "info", "comment", "heading")


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


def test_jasons_synthesis_writes_only_the_files_it_declares_with_path():
    # Jason's summary quotes excerpts under their names: only `path=` blocks are new versions.
    summary = "**app/main.py**\n\n```python\napp = make_app()\n```\n\n```python path=app/extra.py\nx = 1\n```\n"
    assert [f.path for f in extract_files(summary).files] == ["app/main.py", "app/extra.py"]
    assert [f.path for f in extract_files(summary, declared_only=True).files] == ["app/extra.py"]
