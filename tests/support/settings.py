"""Which environment variables a settings class reads (for docs and manifest checks)."""

from pydantic import AliasChoices
from pydantic_settings import BaseSettings


def env_names(cls: type[BaseSettings]) -> set[str]:
    prefix = cls.model_config.get("env_prefix", "")
    names = set()
    for name, field in cls.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.add(str(alias.choices[0]))
        elif isinstance(alias, str):
            names.add(alias)
        else:
            names.add((prefix + name).upper())
    return names


def service_settings() -> dict[str, type[BaseSettings]]:
    """Every settings class of the project: the services' and the CLI's."""
    from aether_cli.settings import CLISettings
    from aether_container_manager.settings import ContainerManagerSettings
    from aether_executor.settings import ExecutorSettings
    from aether_gateway.settings import GatewaySettings
    from aether_planner.settings import PlannerSettings
    from aether_synthesizer.settings import SynthesizerSettings

    return {
        "gateway": GatewaySettings,
        "planner": PlannerSettings,
        "executor": ExecutorSettings,
        "synthesizer": SynthesizerSettings,
        "container-manager": ContainerManagerSettings,
        "cli": CLISettings,
    }
