"""VLN data layer: read VLM-R1, ShareGPT / LLaMA-Factory, VLN-Ego folders and vln-gym jsonl into Episodes.

`episodes_dataset` gives the same episodes as a cached Arrow `datasets.Dataset`.
See `load_episodes` for the options, `vln_gym.data.media` for image path rules and
`vln_gym.data.privileged` for how poses are read or rebuilt from VLN-Ego actions.
"""

from vln_gym.data.habitat import HabitatEpisode, read_habitat_episodes
from vln_gym.data.loader import episodes_from_rows, iter_episodes, load_episodes, validate_files
from vln_gym.data.ownjsonl import FORMAT_TAG, episode_record, write_episodes_jsonl
from vln_gym.data.problems import DataError, Problem, ValidationReport
from vln_gym.data.trajectory import integrate_actions

__all__ = [
    "FORMAT_TAG",
    "DataError",
    "HabitatEpisode",
    "Problem",
    "ValidationReport",
    "episode_from_row",
    "episode_record",
    "episodes_dataset",
    "episodes_from_rows",
    "integrate_actions",
    "iter_episodes",
    "load_episodes",
    "read_habitat_episodes",
    "validate_files",
    "write_episodes_jsonl",
]


def __getattr__(name: str):
    # The `datasets`-backed API is imported on first use (importing `datasets` takes a while).
    if name in ("episodes_dataset", "episode_from_row"):
        from vln_gym.data import hf

        return getattr(hf, name)
    raise AttributeError(f"module 'vln_gym.data' has no attribute {name!r}")
