from pathlib import Path
from typing import Literal

from pydantic import Field

from aether_contracts.topology import STREAM_MAX_AGE_S
from aether_core.config import ServiceSettings
from aether_core.templates import DEFAULT_MASTER_ID

LONGEST_WAIT_S = STREAM_MAX_AGE_S - 86400
"""A wait's deadline is a message schedule on the work stream, which keeps messages a week."""


class GatewaySettings(ServiceSettings):
    http_host: str = Field("127.0.0.1", description="Address the REST gateway listens on.")
    http_port: int = Field(8000, ge=1, le=65535, description="Port of the REST gateway.")
    cors_origins: str = Field(
        "",
        validation_alias="CORS_ORIGINS",
        description="Comma-separated origins allowed by CORS ('*' for any); empty: none.",
    )
    max_description_chars: int = Field(20_000, ge=1, description="Longest task description accepted.")
    max_body_bytes: int = Field(
        1_000_000, ge=1024, description="Largest request body accepted, counted as it arrives (any encoding)."
    )
    streams_per_client: int = Field(
        20, ge=1, description="Live streams (SSE and WebSocket) one tenant may have open (one address with auth off)."
    )
    streams_total: int = Field(1000, ge=1, description="Live streams one gateway process serves at once.")
    slow_client_timeout_s: float = Field(
        30.0,
        gt=0,
        description="A connection whose client takes nothing of what it is sent for this long is closed.",
    )
    keep_alive_timeout_s: float = Field(
        75.0,
        gt=0,
        description="An idle keep-alive connection is closed after this long. Longer than clients' "
        "own idle limits (httpx 5 s, browsers 60 s, most proxies 60 s), so a client never reuses a "
        "connection the gateway is closing at that moment.",
    )
    default_master: str = Field(DEFAULT_MASTER_ID, description="Master used when a task names none.")
    task_timeout_s: float = Field(
        3600.0, gt=0, description="A task not finished this long after its start (or retry) fails."
    )
    plan_approval: Literal["never", "on_request", "always"] = Field(
        "on_request",
        description="Whether a person approves plans before they run: when a submission asks "
        "(`require_plan_approval`), always, or never (a submission asking for it is refused).",
    )
    approval_timeout_s: float = Field(
        86400.0, gt=0, le=LONGEST_WAIT_S, description="A plan not approved this long after it is ready fails its task."
    )
    question_timeout_s: float = Field(
        86400.0, gt=0, le=LONGEST_WAIT_S, description="An expert's question not answered this long fails its subtask."
    )
    max_subtasks: int = Field(32, ge=1, le=256, description="Most subtasks an edited plan may have (as the planner's).")
    ui_dir: Path | None = Field(None, description="Built Mission Board to serve at / (ui/dist).")
    auth: bool = Field(True, description="Require an API key (Bearer) on the API; 'off' to disable.")
    api_keys: str = Field("", description="API keys: 'tenant:key[:admin]', comma-separated.")
    api_keys_file: Path | None = Field(None, description="File of API keys, one 'tenant key [admin]' per line.")
    max_active_tasks: int = Field(
        50, ge=1, description="Tasks one tenant may have in progress; more get 429 with Retry-After."
    )
    access_log: bool = Field(True, description="Log every request (keys and signatures in URLs are redacted).")
    download_link_ttl_s: float = Field(
        900.0, gt=0, le=86400, description="How long a signed download link (GET .../files) works."
    )
    jaeger_url: str | None = Field(
        None,
        description="Jaeger UI base URL (e.g. http://localhost:16686): tasks link to their trace.",
    )

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]
