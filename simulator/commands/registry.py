"""The simulator's command registry (one per process; modules register into it on import)."""

from simulator.runtime import CommandRegistry

REGISTRY = CommandRegistry()
"""Every simulator implementation of a function in ``worker/powershell/*.ps1``."""
