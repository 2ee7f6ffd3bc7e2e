"""Serving: the SimPy engine that runs one arm of one point, the scheduler policies that
decide each GPU step, and the KV cache.

    from servesim.serving import Recorder, ServingConfig, simulate
"""

from servesim.recorder import Recorder
from servesim.serving.engine import Server, ServingConfig, simulate

__all__ = ["Recorder", "Server", "ServingConfig", "simulate"]
