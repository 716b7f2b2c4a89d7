"""`ReadContext`: the options and per-load caches shared by every reader during one load."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vln_gym.data.fields import LoadOptions
from vln_gym.data.habitat import HabitatEpisodes
from vln_gym.data.media import ImageChecker
from vln_gym.data.vlnego import TrajectoryCache
from vln_gym.paths import absolute_path


@dataclass
class ReadContext:
    """Options plus caches that live for one `load_episodes` / `validate_files` call."""

    options: LoadOptions
    trajectories: TrajectoryCache = field(init=False)
    images: ImageChecker = field(default_factory=ImageChecker)
    habitat: HabitatEpisodes | None = field(init=False)
    _base_dirs: dict[str, str] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.habitat = HabitatEpisodes(self.options.pose_source) if self.options.pose_source else None
        self.trajectories = TrajectoryCache(self.options, self.habitat)

    def base_dir(self, path: str) -> str:
        """The absolute folder of data file ``path`` (relative image paths resolve against it); a ``..`` in
        it is resolved as the file system resolves it (``../data/x.jsonl`` from another folder)."""
        folder = self._base_dirs.get(path)
        if folder is None:
            folder = self._base_dirs[path] = absolute_path(Path(path).parent)
        return folder
