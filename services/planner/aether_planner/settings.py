from typing import Literal

from pydantic import Field

from aether_core.config import LLMSettings, ServiceSettings


class PlannerSettings(ServiceSettings, LLMSettings):
    planner_model: str | None = Field(None, description="Planning model; default AETHER_LLM_MODEL.")
    planner_max_tokens: int | None = Field(
        None, ge=16, description="Planning replies' max_tokens per request; default AETHER_LLM_MAX_TOKENS."
    )
    max_subtasks: int = Field(32, ge=1, le=256, description="Most subtasks a plan may have.")
    planner_concurrency: int = Field(16, ge=1, description="Tasks planned at once per instance.")
    planning_timeout_s: float = Field(600.0, gt=0, description="Time planning may take, retries included.")
    plan_fallback: Literal["keywords", "fail"] = Field(
        "keywords", description="When Jason's plan and its repair both fail: plan from the templates' keywords, or fail."
    )

    @property
    def max_tokens(self) -> int:
        return self.planner_max_tokens or self.llm_max_tokens

    @property
    def model(self) -> str:
        return self.planner_model or self.llm_model
