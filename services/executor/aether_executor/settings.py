import tempfile
from pathlib import Path
from typing import Literal

from pydantic import Field

from aether_core.config import LLMSettings, SandboxSettings, ServiceSettings, WorkspaceSettings


def _temp_dir() -> str:
    try:
        return tempfile.gettempdir()
    except OSError:  # a read-only container without a /tmp: the worker runs without worktrees
        return "/tmp"


class ExecutorSettings(ServiceSettings, LLMSettings, WorkspaceSettings, SandboxSettings):
    executor_role: Literal["all", "scheduler", "worker"] = Field(
        "all",
        description="scheduler: decides what is ready; worker: runs subtasks (an agent); all: both.",
    )
    agent_types: str = Field(
        "all", description="Comma-separated agent types a worker serves, or 'all'."
    )
    agent_id: str | None = Field(None, description="This worker's agent id; default the instance id.")
    agent_runtime: Literal["process", "docker", "kubernetes", "external"] = Field(
        "process", description="What runs this worker, as shown in the agent pool."
    )
    agent_runtime_id: str | None = Field(
        None, description="Container id or pod name shown in the pool; default the process id."
    )
    worker_concurrency: int = Field(4, ge=1, description="Subtasks one worker runs at once, per type.")
    scheduler_concurrency: int = Field(64, ge=1, description="Events the scheduler handles at once.")
    expert_model: str | None = Field(None, description="Expert model; default AETHER_LLM_MODEL.")
    expert_max_tokens: int | None = Field(
        None, ge=16, description="Expert replies' max_tokens per request; default AETHER_LLM_MAX_TOKENS."
    )
    subtask_timeout_s: float = Field(900.0, gt=0, description="Time one subtask may take, retries included.")
    auto_replan: bool = Field(
        True, description="Ask Jason once for a replacement when a subtask fails for good."
    )
    expert_tools: bool = Field(
        True, description="Experts work with tools in their worktree (off: one reply whose files are kept)."
    )
    expert_max_steps: int = Field(40, ge=1, description="Tool calls an expert may make in one subtask run.")
    expert_max_tool_errors: int = Field(
        5, ge=1, description="Wrong tool calls in a row (unknown tool, bad arguments, refused path) before the subtask fails."
    )
    expert_fix_rounds: int = Field(2, ge=0, description="Times an expert may fix its work after its checks failed.")
    workspace_dir: str = Field(
        default_factory=lambda: str(Path(_temp_dir()) / "aether-workspaces"),
        description="Where a worker keeps its git worktrees (a subdirectory per agent); 'off': none.",
    )

    @property
    def workspace_path(self) -> Path | None:
        if self.workspace_dir.strip().lower() in ("", "off", "none"):
            return None
        return Path(self.workspace_dir) / "".join(
            c if c.isalnum() or c in "-_" else "_" for c in (self.agent_id or self.instance_id)
        )

    @property
    def max_tokens(self) -> int:
        return self.expert_max_tokens or self.llm_max_tokens

    @property
    def model(self) -> str:
        return self.expert_model or self.llm_model

    def served_types(self, known: list[str]) -> list[str]:
        if self.agent_types.strip() in ("", "all", "*"):
            return list(known)
        wanted = [t.strip() for t in self.agent_types.split(",") if t.strip()]
        unknown = [t for t in wanted if t not in known]
        if unknown:
            raise ValueError(f"unknown agent type(s) {', '.join(unknown)}; known: {', '.join(known)}")
        return wanted
