"""servesim: a discrete-event simulator of LLM inference serving with speculative decoding."""

__version__ = "0.1.0"
