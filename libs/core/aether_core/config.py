"""Settings shared by every service. Services subclass these in their own `settings.py`, the only
place where a service reads its environment. Every field is documented in the README."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .files import FileLimits
from .llm import LLMConfig
from .sandbox import SandboxLimits

DEFAULT_MODEL = "gpt-4o-mini"


def default_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


OtlpProtocol = Literal["grpc", "http/protobuf"]
CAPTURE_MODES = {
    "": False, "false": False, "no_content": False, "event_only": False,
    "true": True, "span_only": True, "span_and_event": True,
}
"""`OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`: the boolean of the older GenAI
instrumentations, or the modes of opentelemetry-util-genai; whether content goes on spans."""


class TelemetrySettings(BaseSettings):
    """The standard OpenTelemetry variables that decide whether a service traces at all.

    Only these are read here; everything else (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
    `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_BSP_*`, `OTEL_TRACES_SAMPLER`, …) is read by the
    OpenTelemetry SDK itself, as the specification says, once tracing is on.
    """

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    otel_sdk_disabled: bool = Field(False, validation_alias=AliasChoices("OTEL_SDK_DISABLED"))
    otel_traces_exporter: str | None = Field(
        None, validation_alias=AliasChoices("OTEL_TRACES_EXPORTER")
    )
    otel_exporter_otlp_endpoint: str | None = Field(
        None, validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_ENDPOINT")
    )
    otel_exporter_otlp_traces_endpoint: str | None = Field(
        None, validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )
    otel_exporter_otlp_protocol: OtlpProtocol | None = Field(
        None, validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_PROTOCOL")
    )
    otel_exporter_otlp_traces_protocol: OtlpProtocol | None = Field(
        None, validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
    )
    otel_semconv_stability_opt_in: str = Field(
        "", validation_alias=AliasChoices("OTEL_SEMCONV_STABILITY_OPT_IN")
    )
    otel_instrumentation_genai_capture_message_content: str = Field(
        "", validation_alias=AliasChoices("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT")
    )

    @field_validator("otel_instrumentation_genai_capture_message_content")
    @classmethod
    def _known_capture_mode(cls, value: str) -> str:
        if value.strip().lower() not in CAPTURE_MODES:
            raise ValueError(
                f"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT is '{value}'; use true or false "
                "(or SPAN_ONLY, SPAN_AND_EVENT, EVENT_ONLY, NO_CONTENT)"
            )
        return value

    @property
    def trace_exporters(self) -> list[str]:
        """The span exporters to install: empty means no tracing at all.

        Unlike the SDK's auto-configuration (which exports to localhost:4317 when nothing is
        set), nothing set means nothing exported: a service must not spend anything on tracing
        nobody asked for. An OTLP endpoint alone is enough to turn OTLP export on.
        """
        if self.otel_sdk_disabled:
            return []
        names = self.otel_traces_exporter
        if names is None or not names.strip():
            endpoint = self.otel_exporter_otlp_traces_endpoint or self.otel_exporter_otlp_endpoint
            return ["otlp"] if endpoint else []
        chosen = [n.strip().lower() for n in names.split(",") if n.strip()]
        return [] if chosen == ["none"] else [n for n in chosen if n != "none"]

    @property
    def genai_latest(self) -> bool:
        """`gen_ai_latest_experimental` asked for: the GenAI conventions' latest experimental
        names (the task and planning spans as `invoke_workflow` and `plan`)."""
        return "gen_ai_latest_experimental" in {v.strip() for v in self.otel_semconv_stability_opt_in.split(",")}

    @property
    def capture_content(self) -> bool:
        """Prompts, replies and tool arguments on spans (`gen_ai.input.messages`, ...): off unless
        asked for. Aether emits no events, so `EVENT_ONLY` records nothing either."""
        return CAPTURE_MODES[self.otel_instrumentation_genai_capture_message_content.strip().lower()]

    @property
    def otlp_protocol(self) -> OtlpProtocol:
        # The specification's default; the Python SDK keeps grpc only for backward compatibility.
        return self.otel_exporter_otlp_traces_protocol or self.otel_exporter_otlp_protocol or "http/protobuf"


class ServiceSettings(TelemetrySettings):
    model_config = SettingsConfigDict(env_prefix="AETHER_", extra="ignore", populate_by_name=True)

    nats_url: str = Field(
        "nats://127.0.0.1:4222",
        description="NATS server(s), comma-separated.",
    )
    nats_replicas: int = Field(1, ge=1, le=5, description="Replicas of streams and KV buckets.")
    agents_dir: Path | None = Field(
        None, description="Directory of custom agent templates and masters (YAML or JSON)."
    )
    instance_id: str = Field(
        default_factory=default_instance_id,
        description="Name of this instance in heartbeats and logs; default host-pid.",
    )
    log_level: str = Field("INFO", description="Python log level.")
    stop_timeout_s: float = Field(
        40.0,
        gt=0,
        description="Time a service has from its stop signal to finish what it holds and exit; "
        "then it exits anyway (status 70), logging where it waited. Above the 30 s graceful "
        "timeout of its handlers, below Kubernetes' 45 s grace period.",
    )
    probe_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Port of /livez, /readyz and /metrics for the NATS services; unset: off.",
    )
    probe_host: str = Field("0.0.0.0", description="Address of the probe endpoint.")

    @property
    def nats_servers(self) -> list[str]:
        return [s.strip() for s in self.nats_url.split(",") if s.strip()]

    @property
    def nats_addresses(self) -> list[str]:
        """The servers without their credentials (for labels and logs)."""
        return [_without_credentials(s) for s in self.nats_servers]

    @property
    def nats_user(self) -> str | None:
        """The NATS user the URL names (`nats://planner:…@host`), if any."""
        for server in self.nats_servers:
            user = urlsplit(server if "://" in server else f"nats://{server}").username
            if user:
                return user
        return None


def _without_credentials(server: str) -> str:
    scheme, separator, rest = server.rpartition("://")
    return f"{scheme}{separator}{rest.rpartition('@')[2]}"


class LLMSettings(BaseSettings):
    """The standard OpenAI variables plus a model per role with one default."""

    model_config = SettingsConfigDict(env_prefix="AETHER_", extra="ignore", populate_by_name=True)

    openai_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("OPENAI_API_KEY")
    )
    openai_base_url: str | None = Field(
        None, validation_alias=AliasChoices("OPENAI_BASE_URL")
    )
    llm_model: str = Field(DEFAULT_MODEL, description="Model for every role without its own.")
    llm_timeout_s: float = Field(120.0, gt=0, description="Timeout of one LLM request.")
    llm_max_attempts: int = Field(
        20, ge=1, description="Attempts per LLM call (429, 5xx, timeouts); the retry budget bounds it too."
    )
    llm_retry_budget_s: float = Field(300.0, gt=0, description="Time one LLM call may spend retrying.")
    llm_backoff_base_s: float = Field(1.0, gt=0, description="First retry delay (doubles each time).")
    llm_backoff_max_s: float = Field(30.0, gt=0, description="Longest delay between two retries.")
    llm_max_tokens: int = Field(
        4096, ge=16, description="Longest reply of one request (max_tokens) for every role without its own."
    )
    llm_max_continuations: int = Field(
        2, ge=0, description="Times a reply cut off at max_tokens is continued before the call fails."
    )
    task_token_budget: int | None = Field(
        None, ge=1, description="Tokens a task may spend: every LLM call's reply is capped by what is left."
    )
    llm_max_concurrency: int = Field(
        0, ge=0, description="LLM calls in flight per endpoint across every process; 0: no limit (1 for a local llama.cpp)."
    )

    def llm_config(self) -> LLMConfig:
        if self.openai_api_key is None:
            raise RuntimeError(
                "OPENAI_API_KEY is not set. Set it (and OPENAI_BASE_URL for a server other than "
                "OpenAI), or run `make up`, which starts the built-in simulator without a key."
            )
        return LLMConfig(
            base_url=self.openai_base_url,
            api_key=self.openai_api_key.get_secret_value(),
            timeout_s=self.llm_timeout_s,
            max_attempts=self.llm_max_attempts,
            retry_budget_s=self.llm_retry_budget_s,
            backoff_base_s=self.llm_backoff_base_s,
            backoff_max_s=self.llm_backoff_max_s,
            max_continuations=self.llm_max_continuations,
        )


class WorkspaceSettings(BaseSettings):
    """Bounds on the files read out of one LLM reply (an expert's or the synthesis's)."""

    model_config = SettingsConfigDict(env_prefix="AETHER_", extra="ignore", populate_by_name=True)

    workspace_max_file_bytes: int = Field(1_000_000, ge=1, description="Largest file accepted from a reply.")
    workspace_max_files: int = Field(200, ge=1, description="Most files accepted from one reply.")
    workspace_max_reply_bytes: int = Field(
        8_000_000, ge=1, description="Most bytes of files accepted from one reply, all files together."
    )

    def file_limits(self) -> FileLimits:
        return FileLimits(
            max_file_bytes=self.workspace_max_file_bytes,
            max_files=self.workspace_max_files,
            max_total_bytes=self.workspace_max_reply_bytes,
        )


class SandboxSettings(BaseSettings):
    """Where and how experts' commands and the tasks' checks run (`aether_core.sandbox`)."""

    model_config = SettingsConfigDict(env_prefix="AETHER_", extra="ignore", populate_by_name=True)

    check_timeout_s: float = Field(300.0, gt=0, description="Time one of a subtask's checks may take.")
    sandbox: Literal["auto", "bubblewrap", "off"] = Field(
        "auto", description="Where experts' commands run: bubblewrap when it works here (auto), or never (off)."
    )
    sandbox_timeout_s: float = Field(120.0, gt=0, description="Wall time of one command an expert runs.")
    sandbox_memory_mb: int = Field(1024, ge=64, description="Memory of one command (address space).")
    sandbox_processes: int = Field(128, ge=8, description="Processes one command may have at once.")
    sandbox_output_bytes: int = Field(32_000, ge=1024, description="Output of one command the expert reads (cut visibly).")
    sandbox_concurrency: int = Field(
        0, ge=0, description="Sandboxed commands that run at once on this host, across its agents (0: one per CPU)."
    )
    def sandbox_limits(self) -> SandboxLimits:
        return SandboxLimits(
            timeout_s=self.sandbox_timeout_s,
            cpu_s=self.sandbox_timeout_s,
            memory_bytes=self.sandbox_memory_mb << 20,
            processes=self.sandbox_processes,
            output_bytes=self.sandbox_output_bytes,
        )
