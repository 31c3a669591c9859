"""bbaudit's core: event model, config, state, stage contracts, pipeline."""

__version__ = "0.1.0"
