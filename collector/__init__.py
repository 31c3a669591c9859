"""bbaudit's core: the event model, config, state, the stage contracts and the pipeline."""

__version__ = "0.1.0"
