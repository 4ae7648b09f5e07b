"""gpufs-agent: the reporter that runs on each GPU machine and sends heartbeats to a gpuf-s server."""
from .cli import main

__all__ = ["main"]
