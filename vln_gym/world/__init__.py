"""The built-in procedural world: floor plans, navigation truth, a numpy renderer, episodes, export.

``gym.make("VLN-v0")`` with no data runs in these worlds, so every test and demo works offline.
"""

from vln_gym.world.config import WorldConfig, parse_scene_id, scene_id
from vln_gym.world.episodes import (
    WorldEpisodes,
    generate_episode,
    generate_episodes,
    instruction_length_limit,
    world_for_episode,
)
from vln_gym.world.export import export_dataset
from vln_gym.world.layout import Landmark, Layout, Room
from vln_gym.world.navigation import UnreachableGoalError
from vln_gym.world.world import World, world_from_scene_id

__all__ = [
    "Landmark",
    "Layout",
    "Room",
    "UnreachableGoalError",
    "World",
    "WorldConfig",
    "WorldEpisodes",
    "export_dataset",
    "generate_episode",
    "generate_episodes",
    "instruction_length_limit",
    "parse_scene_id",
    "scene_id",
    "world_for_episode",
    "world_from_scene_id",
]
