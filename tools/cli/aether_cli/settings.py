from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_KEY_FILE = Path(".aether") / "api-key"
"""Where `make up` keeps the development key, relative to the repository it runs in."""


class CLISettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AETHER_", extra="ignore")

    url: str = Field("http://127.0.0.1:8000", description="The Aether gateway the CLI talks to.")
    api_key: SecretStr | None = Field(None, description="The API key sent as 'Authorization: Bearer'.")

    def key(self) -> str | None:
        """AETHER_API_KEY, else the development key of a `make up` run from this directory."""
        if self.api_key is not None and self.api_key.get_secret_value().strip():
            return self.api_key.get_secret_value().strip()
        if DEV_KEY_FILE.is_file():
            return DEV_KEY_FILE.read_text().strip() or None
        return None
