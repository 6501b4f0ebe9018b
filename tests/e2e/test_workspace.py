"""The workspace end to end: the stack as `make up` runs it, the simulator writing files, the
repository downloaded over REST and read with the real git."""

import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.support.plans import scripted, subtask

pytestmark = pytest.mark.e2e


def git(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"git {' '.join(args)} failed: {done.stderr}"
    return done.stdout


async def test_a_four_subtask_task_yields_a_repository_with_one_commit_per_subtask_in_dependency_order(stack, tmp_path):
    # Listed against dependency order on purpose: the commits follow the dependencies.
    plan = scripted(
        "Build an items service",
        [
            subtask("tests", "testing-expert", ["api", "ui"]),
            subtask("api", "python-backend", ["schema"]),
            subtask("schema", "database-expert"),
            subtask("ui", "react-frontend", ["schema"]),
        ],
    )
    async with stack.client() as client:
        created = await stack.submit(client, plan)
        task = await stack.wait_task(client, created["id"])
        assert task["status"] == "completed", task["logs"]
        task_id = task["id"]

        listing = (await client.get(f"/api/orchestrate/task/{task_id}/files")).json()
        by_path = {f["path"]: f for f in listing["files"]}
        assert {p: by_path[p]["written_by"] for p in ("db/schema.sql", "app/main.py", "ui/src/App.tsx", "tests/test_app.py")} == {
            "db/schema.sql": "schema",
            "app/main.py": "api",
            "ui/src/App.tsx": "ui",
            "tests/test_app.py": "tests",
        }
        assert by_path["README.md"]["written_by"] == "synthesis"
        assert listing["conflicts"] == [] and listing["refused"] == []
        repository = listing["repository"]
        assert repository["error"] is None and len(repository["commits"]) == 5

        # The state lists each subtask's files too, and the result text points at them.
        api = next(s for s in task["subtasks"] if s["id"] == "api")
        assert "[file app/main.py:" in api["result"] and "FastAPI()" not in api["result"]

        schema_file = await client.get(f"/api/orchestrate/task/{task_id}/files/db/schema.sql")
        assert schema_file.status_code == 200
        assert schema_file.headers["content-type"].startswith("text/plain")
        assert "-- written by schema" in schema_file.text and "CREATE TABLE items" in schema_file.text

        bundle = await client.get(f"/api/orchestrate/task/{task_id}/repository.bundle")
        assert bundle.status_code == 200
        archive = await client.get(f"/api/orchestrate/task/{task_id}/repository.tar.gz")
        assert archive.status_code == 200

        requests = await stack.sim_requests(client, task_id=task_id, role="expert")

    (tmp_path / "task.bundle").write_bytes(bundle.content)
    git("clone", "-q", str(tmp_path / "task.bundle"), str(tmp_path / "clone"))
    clone = tmp_path / "clone"
    git("fsck", "--strict", cwd=clone)
    log = git("log", "--reverse", "--format=%an|%s", cwd=clone).splitlines()
    authors = [line.split("|")[0] for line in log]
    subjects = [line.split("|")[1].split(":")[0] for line in log]
    assert subjects[0] == "schema" and subjects[3] == "tests" and set(subjects[1:3]) == {"api", "ui"}
    assert authors[:4] == ["database-expert", *(("python-backend", "react-frontend") if subjects[1] == "api" else ("react-frontend", "python-backend")), "testing-expert"]
    assert authors[4] == "jason" and log[4].split("|")[1].startswith("Synthesis by Jason")
    assert git("show", "--stat", "--format=", "HEAD~4", cwd=clone).split()[0] == "db/schema.sql"
    readme = (clone / "README.md").read_text()
    assert "Simulated synthesis" in readme and "How to run" in readme and "`app/main.py`" in readme
    assert (clone / "app/main.py").read_bytes() == (await _read(stack, task_id, "app/main.py"))

    with tarfile.open(fileobj=io.BytesIO(archive.content), mode="r:gz") as tar:
        names = {m.name for m in tar.getmembers() if m.isfile()}
        assert all(not m.issym() and not m.islnk() for m in tar.getmembers())
    assert names == {f"aether-{task_id}/{p}" for p in git("ls-files", cwd=clone).split()}

    # A dependent's prompt holds its dependencies' files, read from the Object Store.
    prompts = {r["headers"]["x-aether-subtask-id"]: r["messages"][-1]["content"] for r in requests}
    assert "### File db/schema.sql (written by schema, database-expert" in prompts["api"]
    assert "-- written by schema\n-- simulated schema\nCREATE TABLE items" in prompts["api"]
    assert "### File app/main.py (written by api" in prompts["tests"]
    assert "### File db/schema.sql" in prompts["tests"], "transitive dependencies' files too"
    assert "### File" not in prompts["schema"]


async def _read(stack, task_id: str, path: str) -> bytes:
    async with stack.client() as client:
        response = await client.get(f"/api/orchestrate/task/{task_id}/files/{path}")
        assert response.status_code == 200
        return response.content


async def test_parallel_subtasks_writing_one_path_are_a_conflict_that_the_synthesis_resolves(stack, tmp_path):
    plan = scripted(
        "Two experts, one file",
        [
            subtask("base", "database-expert"),
            subtask("left", "python-backend", ["base"], sim="path=app/shared.py"),
            subtask("right", "fullstack", ["base"], sim="path=app/shared.py"),
            subtask("after", "testing-expert", ["left"], sim="path=app/shared.py"),
        ],
    )
    async with stack.client() as client:
        created = await stack.submit(client, plan)
        task = await stack.wait_task(client, created["id"])
        assert task["status"] == "completed", task["logs"]
        listing = (await client.get(f"/api/orchestrate/task/{task['id']}/files")).json()
        bundle = (await client.get(f"/api/orchestrate/task/{task['id']}/repository.bundle")).content
        versions = await client.get(f"/api/orchestrate/task/{task['id']}/files/app/shared.py", params={"written_by": "left"})
        [synthesis] = await stack.sim_requests(client, task_id=task["id"], role="synthesizer")

    # `after` depends on `left`: overwriting its file is deliberate. `right` ran beside both.
    [conflict] = listing["conflicts"]
    assert conflict["path"] == "app/shared.py" and conflict["kind"] == "content"
    assert set(conflict["subtask_ids"]) == {"left", "right", "after"}
    assert conflict["resolved_by_synthesis"] is True
    assert any("Path conflict:" in line and "app/shared.py" in line for line in task["logs"])
    prompt = synthesis["messages"][-1]["content"]
    assert "### app/shared.py: conflict between" in prompt
    assert "#### Version of left (python-backend)" in prompt and "# written by left" in prompt
    assert "#### Version of right (fullstack)" in prompt and "# written by right" in prompt
    assert "# written by left" in versions.text

    final = {f["path"]: f for f in listing["files"]}["app/shared.py"]
    assert final["written_by"] == "synthesis"
    (tmp_path / "t.bundle").write_bytes(bundle)
    git("clone", "-q", str(tmp_path / "t.bundle"), str(tmp_path / "c"))
    assert (tmp_path / "c/app/shared.py").read_text().startswith("simulated resolution of app/shared.py")


async def test_files_named_as_models_write_them_without_path_equals_reach_the_repository(stack, tmp_path):
    plan = scripted(
        "Build an items service, files named the way real models name them",
        [
            subtask("schema", "database-expert", sim="form=comment"),
            subtask("api", "python-backend", ["schema"], sim="form=heading"),
            subtask("ui", "react-frontend", ["schema"], sim="form=info"),
        ],
    )
    async with stack.client() as client:
        created = await stack.submit(client, plan)
        task = await stack.wait_task(client, created["id"])
        assert task["status"] == "completed", task["logs"]
        listing = (await client.get(f"/api/orchestrate/task/{task['id']}/files")).json()
        bundle = (await client.get(f"/api/orchestrate/task/{task['id']}/repository.bundle")).content
    written = {f["path"]: f["written_by"] for f in listing["files"]}
    assert written == {"db/schema.sql": "schema", "app/main.py": "api", "ui/src/App.tsx": "ui", "README.md": "synthesis"}
    assert listing["refused"] == []
    (tmp_path / "f.bundle").write_bytes(bundle)
    git("clone", "-q", str(tmp_path / "f.bundle"), str(tmp_path / "c"))
    schema = (tmp_path / "c/db/schema.sql").read_text()
    assert schema.startswith("-- db/schema.sql\n-- written by schema\n"), "the naming comment stays in the file"
    assert (tmp_path / "c/app/main.py").read_text().startswith("# written by api\n")


async def test_hostile_file_paths_are_refused_and_recorded_and_nothing_escapes(stack, tmp_path):
    plan = scripted("Hostile", [subtask("evil", "python-backend", sim="hostile=1")])
    async with stack.client() as client:
        created = await stack.submit(client, plan)
        task = await stack.wait_task(client, created["id"])
        assert task["status"] == "completed", task["logs"]
        listing = (await client.get(f"/api/orchestrate/task/{task['id']}/files")).json()
        bundle = (await client.get(f"/api/orchestrate/task/{task['id']}/repository.bundle")).content
        traversal = await client.get(f"/api/orchestrate/task/{task['id']}/files/..%2F..%2Fescaped.txt")
    refused = {r["path"]: r["reason"] for r in listing["refused"]}
    assert "'..'" in refused["../../escaped.txt"]
    assert "absolute" in refused["/etc/aether-owned"]
    assert ".git" in refused[".git/hooks/post-checkout"]
    assert "device name" in refused["CON"] and "device name" in refused["nul.txt"]
    assert "backslash" in refused["a\\..\\..\\windows.txt"]
    assert "link" in refused["link -> /etc/passwd"]
    assert "never closed" in refused["cut_off.py"]
    assert sum("refused" in line for line in task["logs"]) == len(refused)
    assert traversal.status_code == 404 and "'..'" in traversal.json()["detail"]
    (tmp_path / "b.bundle").write_bytes(bundle)
    git("clone", "-q", str(tmp_path / "b.bundle"), str(tmp_path / "c"))
    assert sorted(git("ls-files", cwd=tmp_path / "c").split()) == ["README.md", "app/main.py"]
    assert not Path("/etc/aether-owned").exists()


async def test_workspace_endpoints_answer_clearly_for_unknown_and_unfinished_tasks(stack):
    async with stack.client() as client:
        assert (await client.get("/api/orchestrate/task/nope/files")).status_code == 404
        assert (await client.get("/api/orchestrate/task/nope/repository.bundle")).status_code == 404
        assert (await client.get("/api/orchestrate/task/bad$id/files/a.py")).status_code == 404
        slow = await stack.submit(client, scripted("Slow", [subtask("s", "fullstack", sim="latency_ms=3000")]))
        response = await client.get(f"/api/orchestrate/task/{slow['id']}/repository.tar.gz")
        assert response.status_code == 409 and "assembled when it completes" in response.json()["detail"]
        missing = await client.get(f"/api/orchestrate/task/{slow['id']}/files/none.py")
        assert missing.status_code == 404 and "no file 'none.py'" in missing.json()["detail"]
        bad = await client.get(f"/api/orchestrate/task/{slow['id']}/files/CON")
        assert bad.status_code == 404 and "device name" in bad.json()["detail"]
        assert (await client.get("/api/orchestrate/task/%C3%BA/repository.bundle")).status_code == 404
        await stack.wait_task(client, slow["id"])

        # The automatic replacement fails too (scripted), so the task ends failed.
        still_broken = 'SIM-REPLAN: {"subtasks": [{"id": "fix", "description": "broken [[sim fail=400]]", "agent_type": "fullstack"}]}'
        failed = await stack.submit(client, scripted("Fails\n" + still_broken, [subtask("f", "fullstack", sim="fail=400")]))
        task = await stack.wait_task(client, failed["id"])
        assert task["status"] == "failed"
        gone = await client.get(f"/api/orchestrate/task/{failed['id']}/repository.bundle")
        assert gone.status_code == 404 and "has no repository" in gone.json()["detail"]
