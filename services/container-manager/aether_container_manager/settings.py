import hashlib
import os
from pathlib import Path
from typing import Literal

from pydantic import Field

from aether_core.config import ServiceSettings

# What an agent inherits from the container-manager's environment: how to reach the LLM and how
# to behave as an expert. Nothing else leaks into an agent.
AGENT_ENV_PREFIXES = ("OPENAI_", "AETHER_LLM_", "OTEL_", "AETHER_WORKSPACE_MAX_", "AETHER_SANDBOX", "AETHER_EXPERT_")
AGENT_ENV_NAMES = (
    "AETHER_TASK_TOKEN_BUDGET",
    "AETHER_CHECK_TIMEOUT_S",
    "AETHER_SUBTASK_TIMEOUT_S",
    "AETHER_AGENTS_DIR",
    "AETHER_LOG_LEVEL",
)


class ContainerManagerSettings(ServiceSettings):
    agent_backend: Literal["process", "docker"] = Field(
        "process", description="Where agents run: local processes or Docker containers."
    )
    pool_min: int = Field(0, ge=0, description="Warm agents kept per agent type.")
    pool_max: int = Field(4, ge=1, description="Most agents per agent type.")
    pool_backlog_per_agent: int | None = Field(
        None, ge=1, description="Backlog per agent above which another agent starts (default: the agent's concurrency)."
    )
    pool_idle_timeout_s: float = Field(60.0, ge=0, description="Idle time after which an agent above the minimum stops.")
    pool_overrides: str = Field(
        "", description="Per-type policy, e.g. 'python-backend:min=1,max=8;testing-expert:max=2,idle=30'."
    )
    pool_max_starting: int = Field(
        0, ge=0, description="Agents starting at once across the types (0: one per CPU, at least 2); queued work first."
    )
    pool_interval_s: float = Field(1.0, gt=0, description="How often the pool is reconciled.")
    pool_scope: str | None = Field(
        None, description="Label of this stack's agents (adoption after restart); default from the NATS URL."
    )
    agent_concurrency: int | None = Field(
        None,
        ge=1,
        description=(
            "Subtasks one agent runs at once, each in its own worktree (default: 4 for processes, "
            "whose commands each run in a sandbox of their own; 1 for containers, where the "
            "container is the subtask's sandbox)."
        ),
    )
    agent_start_timeout_s: float = Field(90.0, gt=0, description="Time an agent has to register.")
    agent_stop_timeout_s: float = Field(20.0, gt=0, description="Time an agent has to stop before it is killed.")
    stop_agents_on_exit: bool = Field(True, description="Stop every agent when the container-manager stops.")
    agent_log_dir: Path = Field(Path(".aether/agents"), description="Process backend: one log file per agent.")
    agent_image: str = Field("aether-executor:latest", description="Docker backend: the agent image.")
    docker_network: str = Field(
        "host", description="Docker backend: network of agent containers ('host', 'bridge' or a network name)."
    )
    agent_nats_url: str | None = Field(
        None,
        description=(
            "NATS URL as an agent sees it, with the `agent` user's credentials (make up passes "
            "them: the manager hands the URL to the agents it starts and never connects with "
            "it); default AETHER_NATS_URL."
        ),
    )
    agent_memory: str = Field("512m", description="Docker backend: memory limit per agent.")
    agent_cpus: float = Field(1.0, gt=0, description="Docker backend: CPU limit per agent.")
    agent_pids: int = Field(256, ge=16, description="Docker backend: process limit per agent.")
    agent_user: str = Field("10001:10001", description="Docker backend: user an agent runs as.")

    @property
    def subtasks_per_agent(self) -> int:
        if self.agent_concurrency is not None:
            return self.agent_concurrency
        return 1 if self.agent_backend == "docker" else 4

    @property
    def max_starting(self) -> int:
        return self.pool_max_starting or max(2, os.cpu_count() or 1)

    @property
    def backlog_per_agent(self) -> int:
        return self.pool_backlog_per_agent or self.subtasks_per_agent

    @property
    def scope(self) -> str:
        if self.pool_scope:
            return self.pool_scope
        # Without credentials: the stack is the same whichever NATS user looks at it.
        digest = hashlib.sha256(",".join(sorted(self.nats_addresses)).encode()).hexdigest()[:12]
        return f"pool-{digest}"

    def process_environment(self) -> dict[str, str]:
        """What a local agent process needs from ours to start at all (its interpreter's PATH)."""
        keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")
        return {k: os.environ[k] for k in keep if k in os.environ}

    def agent_environment(self) -> dict[str, str]:
        inherited = {
            k: v
            for k, v in os.environ.items()
            if k.startswith(AGENT_ENV_PREFIXES) or k in AGENT_ENV_NAMES
        }
        return {**inherited, "AETHER_NATS_URL": self.agent_nats_url or self.nats_url}
