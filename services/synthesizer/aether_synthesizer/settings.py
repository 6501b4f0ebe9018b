from pydantic import Field

from aether_core.config import LLMSettings, SandboxSettings, ServiceSettings, WorkspaceSettings


class SynthesizerSettings(ServiceSettings, LLMSettings, WorkspaceSettings, SandboxSettings):
    synthesizer_model: str | None = Field(None, description="Synthesis model; default AETHER_LLM_MODEL.")
    synthesizer_max_tokens: int | None = Field(
        None, ge=16, description="Synthesis replies' max_tokens per request; default AETHER_LLM_MAX_TOKENS."
    )
    synthesizer_concurrency: int = Field(16, ge=1, description="Syntheses at once per instance.")
    synthesis_timeout_s: float = Field(600.0, gt=0, description="Time a synthesis may take, retries included.")
    verify_repository: bool = Field(
        True, description="Run every subtask's checks again on the task's assembled repository."
    )
    max_fixups: int = Field(1, ge=0, description="Fix-up subtasks a task gets when its repository fails its checks.")

    @property
    def max_tokens(self) -> int:
        return self.synthesizer_max_tokens or self.llm_max_tokens

    @property
    def model(self) -> str:
        return self.synthesizer_model or self.llm_model
