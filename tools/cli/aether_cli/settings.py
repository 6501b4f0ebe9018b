from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class CLISettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AETHER_", extra="ignore")

    url: str = Field("http://127.0.0.1:8000", description="The Aether gateway the CLI talks to.")
