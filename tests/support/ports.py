from aether_devstack.harness import free_port

__all__ = ["free_port"]
