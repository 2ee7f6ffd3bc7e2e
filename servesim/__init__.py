"""servesim: a discrete-event simulator of LLM inference serving with speculative decoding."""

__version__ = "0.1.0"

__all__ = ["run", "load", "Tables", "__version__"]


def __getattr__(name: str):
    """``servesim.run``, ``servesim.load`` and ``servesim.Tables`` (the Python API,
    :mod:`servesim.api`), imported when first used."""
    if name in ("run", "load", "Tables"):
        from servesim import api
        return getattr(api, name)
    raise AttributeError(f"module 'servesim' has no attribute {name!r}")
