"""A Bitbucket simulator: a generated organisation ("world") and an HTTP server.

``build_world`` generates DC audit events (both shapes), DC access-log git
operations and Atlassian organization (Cloud) events, with injected attack
stories. ``SimulatorServer`` serves them with the documented API behaviour and
switchable faults; ``World.write_files`` writes the DC log files.
"""

from collector.simulator.world import (
    NetworkSite,
    Person,
    Project,
    StoryInfo,
    World,
    build_world,
)

__all__ = [
    "NetworkSite",
    "Person",
    "Project",
    "StoryInfo",
    "World",
    "build_world",
]
