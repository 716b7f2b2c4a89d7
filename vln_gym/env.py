"""`VLNEnv` (registered as ``VLN-v0``): every VLN record becomes a Gymnasium episode."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from rewards import make_reward
from rewards.transition import Transition
from vln_gym.actions import parse_action
from vln_gym.arguments import real_number, size_pair, whole_number
from vln_gym.episode import Episode
from vln_gym.geometry import MOVE_FORWARD, STOP, TURN_LEFT, TURN_RIGHT, apply_action
from vln_gym.metrics import episode_metrics
from vln_gym.spaces import UnicodeText
from vln_gym.topdown import draw_top_down
from vln_gym.views import VIEW_MODES, FrameHistory, TrajectoryReplay, record_frames

Vec3 = tuple[float, float, float]

TEXT_ACTION_MAX_LENGTH = 8192
# Episode-end metrics of short paths are memoised per (episode, path, stopped): in record mode a record has
# only a handful of possible outcomes, revisited every epoch, and episode_metrics costs more than a step.
_METRICS_MEMO_MAX_PATH = 8
_METRICS_MEMO_SIZE = 65536
_ACTION_IDS = frozenset((STOP, MOVE_FORWARD, TURN_LEFT, TURN_RIGHT))
RENDER_VIEWS = ("map", "view", "both")
RESET_OPTIONS = ("episode_index",)  # the keys reset(options=...) reads; any other is refused
# the keys set_state reads without a default (get_state writes these and "stopped", "expert", "rng")
STATE_KEYS = ("episode_index", "position", "heading", "steps", "done", "path", "distances", "frames")
MAX_WORLD_STEP_RATIO = 2.0  # built-in world: forward_step <= this x success_distance (goals stay reachable)


class VLNEnv(gym.Env[dict[str, Any], Any]):
    """Vision-language navigation: follow an instruction from egocentric frames, then STOP near the goal.

    ## Description

    One record (an ``Episode``) is one episode. The environment owns the privileged state (agent pose,
    goal, distances, expert actions) and the reward; the agent only sees frames and the instruction.
    Three view sources decide what the agent sees after it acts (``views``):

    - ``"record"`` (dataset default): the record's own frames. A record holds one decision, so the horizon
      is ``max_steps=1`` by default: the action is applied to the record's pose by free-space kinematics
      and scored against the record's goal and expert action.
    - ``"trajectory"``: records sharing a ``trajectory_id`` form a replay world; after each step the agent
      sees the recorded frame whose pose is nearest to its own (``info["view_error"]`` says how far).
    - ``"world"`` (default with no data): the built-in procedural world (``vln_gym.world``) renders every
      step, walls block motion, distances and expert actions are geodesic. Episodes are generated on
      demand (the first time ``reset`` picks each one), so a large set costs nothing up front.

    ## Action Space

    ``action_space="discrete"``: ``Discrete(4)`` with Habitat ids 0 STOP, 1 MOVE_FORWARD (``forward_step``
    metres), 2 TURN_LEFT, 3 TURN_RIGHT (``turn_angle`` degrees); Python or numpy ints.
    ``action_space="text"``: a ``str`` (``UnicodeText``) of at most 8,192 characters, parsed by
    ``vln_gym.actions.parse_action`` in linear time; a longer answer is invalid; any other type
    (bytes, numbers, None) raises ``TypeError`` naming it.
    Several actions in one answer ("move forward, turn left") run as one macro step, in order; it ends
    early at STOP or at a collision. Unparseable text moves nothing, is penalised, sets
    ``info["invalid_action"]`` and never raises.

    ## Observation Space

    ``Dict(frames=Box(0, 255, (history_frames, H, W, 3), uint8), frame_mask=MultiBinary(history_frames),
    instruction=UnicodeText)``. Valid frames are the last ones (oldest first, current view last); unused
    slots at the front are zeros with mask 0. Record mode shows the record's last ``history_frames``
    images; trajectory and world modes show the frames seen so far in this episode. Frames are resized
    to ``image_size = (H, W)``. Privileged data never appears here; it is in ``info``.

    ## Rewards

    ``rewards.make_reward(rewards)`` builds the reward; ``None`` uses ``rewards.DEFAULT_REWARDS``: progress
    (metres of distance to goal gained per ``forward_step``, a dense signal), a success bonus for STOP
    within the success distance, a penalty for stopping elsewhere, a small step cost against dithering,
    collision and invalid-text penalties. One ``Transition`` per step (macro step) is scored;
    ``info["reward_terms"]`` holds each term.

    ## Episode End

    Terminates on STOP (successful or not) and, in record mode, after ``max_steps`` decisions (the record
    offers nothing further to see, so there is nothing to bootstrap from). Truncates after ``max_steps``
    in trajectory and world modes (default 500; the env truncates itself, no TimeLimit wrapper).
    ``info["metrics"]`` (``vln_gym.metrics.episode_metrics``) comes with the last step; the reference
    path is the record's from the point nearest the start (or start-to-goal when the record has none).

    ## Info

    Reset and step: ``agent_position``, ``agent_heading``, ``goal_position``, ``distance_to_goal``,
    ``episode_id``, and when known ``expert_actions`` (remaining, first = the expert's action now; in world
    mode with ``expert_plan="next"`` only that first action) and ``reference_path``. Steps add
    ``reward_terms``, ``invalid_action``, ``collision``, ``success``, ``actions`` (ids applied),
    ``action_error`` (text mode), ``view_error`` (trajectory mode) and at the end ``metrics``.

    ## Arguments

    - ``data_files``, ``format``, ``field_map``, ``media_dir``, ``path_remap``, ``data_options``: passed to
      ``vln_gym.data.load_episodes`` (``data_options`` = its other keyword arguments).
    - ``episodes``: a list of ``Episode`` instead of files, or rows in any format ``load_episodes`` reads
      (a ``datasets.Dataset``, e.g. from ``vln_gym.data.episodes_dataset``, or a list of dicts).
    - A LLaMA-Factory entry instead of files: ``data_options={"dataset_info": FILE, "dataset": NAME}``.
    - ``views``: ``"record"`` | ``"trajectory"`` | ``"world"``; default record with data, world without.
    - ``max_steps``: decisions per episode (default 1 in record mode, 500 otherwise).
    - ``history_frames`` (2), ``image_size`` ((224, 224), height and width).
    - ``action_space``: ``"discrete"`` | ``"text"``; ``action_options`` maps option letters to ids for text.
    - ``forward_step`` (0.25 m), ``turn_angle`` (15 degrees).
    - ``success_distance`` (3.0 m; a record's own ``success_distance`` wins when set).
    - ``rewards``: anything ``rewards.make_reward`` accepts.
    - ``world_episodes`` (1000), ``world_seed`` (0), ``world_config`` (a ``WorldConfig``, its fields as a
      dict, or a level name ``"easy"`` | ``"medium"`` | ``"standard"`` (``vln_gym.world.levels``), which also
      sets ``forward_step``, ``turn_angle`` and ``max_steps`` unless given): the built-in world's episode set
      when no data is given (``vln_gym.world.episodes.
      WorldEpisodes``: episode i is generated, ~10 ms, when first picked, then kept).
    - ``expert_plan``: world mode only. ``"next"`` (default): ``info["expert_actions"]`` is
      ``(next action,)``, one greedy decision per step (``World.next_expert_action``, ~0.1 ms).
      ``"full"``: the whole remaining plan (``World.expert_actions``), re-planned (~8 ms) whenever the
      agent leaves the previous plan. Rewards see the same expert actions in both modes: a step's
      ``Transition.expert_actions`` holds at least the first ``len(actions)`` expert actions (the full
      plan is computed for macro steps of several text actions, so ``time_decayed_match`` is unchanged);
      use ``"full"`` for a custom term that reads further ahead.
    - ``heading_weight``: metres per radian when matching poses to recorded frames (trajectory mode).
    - ``render_mode``: ``None`` | ``"rgb_array"``; ``render_view``: ``"map"`` (top-down), ``"view"`` (the
      agent's current frame) or ``"both"`` side by side; ``render_size`` the map's (H, W).
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 4}  # noqa: RUF012

    def __init__(
        self,
        data_files: str | Path | Sequence[str | Path] | None = None,
        *,
        media_dir: str | Path | None = None,
        format: str = "auto",
        field_map: Mapping[str, str] | None = None,
        path_remap: Mapping[str, str] | None = None,
        data_options: Mapping[str, Any] | None = None,
        episodes: Sequence[Episode] | None = None,
        views: str | None = None,
        max_steps: int | None = None,
        history_frames: int = 2,
        image_size: tuple[int, int] = (224, 224),
        action_space: str = "discrete",
        action_options: Mapping[str, int] | None = None,
        forward_step: float | None = None,
        turn_angle: float | None = None,
        success_distance: float = 3.0,
        rewards: Any = None,
        world_episodes: int = 1000,
        world_seed: int = 0,
        world_config: Any = None,
        expert_plan: str = "next",
        heading_weight: float = 1.0,
        render_mode: str | None = None,
        render_size: tuple[int, int] = (256, 256),
        render_view: str = "map",
    ) -> None:
        if data_files is not None and episodes is not None:
            raise ValueError("give data_files or episodes, not both")
        if isinstance(world_config, str):  # a named level: its step, turn and budget unless given
            from vln_gym.world.levels import level_settings

            forward_step, turn_angle, max_steps = level_settings(
                world_config, forward_step, turn_angle, max_steps
            )
        forward_step = 0.25 if forward_step is None else forward_step
        turn_angle = 15.0 if turn_angle is None else turn_angle
        has_data = data_files is not None or episodes is not None or "dataset_info" in (data_options or {})
        if views is None:
            views = "record" if has_data else "world"
        _check_choices(
            render_mode=(render_mode, (None, *self.metadata["render_modes"])),
            render_view=(render_view, RENDER_VIEWS),
            views=(views, VIEW_MODES),
            action_space=(action_space, ("discrete", "text")),
            expert_plan=(expert_plan, ("next", "full")),
        )
        self.render_view = render_view
        self.image_size = size_pair("image_size", image_size)
        self.views = views
        self.expert_plan = expert_plan
        if views == "world":
            from vln_gym.world.config import MIN_FORWARD_STEP

            self.forward_step = real_number("forward_step", forward_step, low=MIN_FORWARD_STEP)
        else:
            self.forward_step = real_number("forward_step", forward_step, low=0.0, low_open=True)
        self.turn_angle = real_number("turn_angle", turn_angle, low=0.0, high=180.0, low_open=True)
        self.success_distance = real_number("success_distance", success_distance, low=0.0)
        heading_weight = real_number("heading_weight", heading_weight, low=0.0)
        self.history_frames = whole_number("history_frames", history_frames, low=1)
        self.max_steps = whole_number(
            "max_steps", max_steps if max_steps is not None else (1 if views == "record" else 500), low=1
        )
        self.text_actions = action_space == "text"
        self.action_options = dict(action_options) if action_options is not None else None
        self.render_mode = render_mode
        self.render_size = size_pair("render_size", render_size)

        data_options = dict(data_options or {})
        generated = not has_data  # built-in world episodes, made on demand
        load_kwargs = {
            "format": format,
            "field_map": field_map,
            "media_dir": media_dir,
            "path_remap": path_remap,
            "forward_step": self.forward_step,
            "turn_angle": self.turn_angle,
            **data_options,
        }
        if episodes is not None:
            loaded = list(episodes)
            if not all(isinstance(episode, Episode) for episode in loaded):  # rows: a datasets.Dataset
                from vln_gym.data import episodes_from_rows

                load_kwargs.pop("dataset_info", None), load_kwargs.pop("dataset", None)
                loaded = episodes_from_rows(loaded, name="episodes", **load_kwargs)
        elif has_data:
            from vln_gym.data import load_episodes

            loaded = load_episodes(data_files, **load_kwargs)
        else:
            world = _world_module()
            config = world.WorldConfig.coerce(world_config)
            longest = MAX_WORLD_STEP_RATIO * config.success_distance
            if self.forward_step > longest:
                raise ValueError(
                    f"forward_step={self.forward_step} m: the built-in world serves steps of at most "
                    f"{MAX_WORLD_STEP_RATIO:g} x success_distance ({longest:g} m): longer ones skip goals"
                )
            loaded = world.episodes.WorldEpisodes(
                whole_number("world_seed", world_seed, low=0),
                whole_number("world_episodes", world_episodes, low=1),
                config,
                forward_step=self.forward_step,
                turn_angle=self.turn_angle,
            )
        if not loaded:
            raise ValueError("no episodes to run (the data is empty)")
        self.episodes: Sequence[Episode] = loaded
        self._check_episodes(generated)
        self._replay = TrajectoryReplay(loaded, heading_weight) if views == "trajectory" else None

        self.reward_fn = make_reward(rewards)

        if generated:  # episodes do not exist yet: the generator's bound on instruction length
            longest = loaded.max_instruction_length
        else:
            longest = max(len(episode.instruction) for episode in loaded)
        self.observation_space = spaces.Dict(
            {
                "frames": spaces.Box(0, 255, (self.history_frames, *self.image_size, 3), dtype=np.uint8),
                "frame_mask": spaces.MultiBinary(self.history_frames),
                "instruction": UnicodeText(max(1024, longest)),
            }
        )
        self.action_space = UnicodeText(TEXT_ACTION_MAX_LENGTH) if self.text_actions else spaces.Discrete(4)

        self._history = FrameHistory(self.history_frames, self.image_size)
        self._references: dict[int, tuple[Vec3, ...] | None] = {}
        self._metrics_memo: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._episode: Episode | None = None
        self._done = True

    # ------------------------------------------------------------------ setup helpers

    def _check_episodes(self, generated: bool) -> None:
        episodes = self.episodes
        if generated:  # built-in world episodes are all alike (scene_id set, no images)
            if self.views == "world":
                return
            episodes = episodes[:1]
        for episode in episodes:
            where = episode.source or episode.episode_id
            if self.views != "world" and not episode.images:
                raise ValueError(f"{where}: images: views={self.views!r} needs at least one image per record")
            if self.views == "world" and not episode.scene_id:
                raise ValueError(f"{where}: scene_id: views='world' needs built-in-world episodes")

    # ------------------------------------------------------------------ gymnasium API

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        super().reset(seed=seed)
        if options:
            unknown = [key for key in options if key not in RESET_OPTIONS]
            if unknown:
                raise ValueError(
                    f"reset options: unknown key(s) {unknown}; known: {', '.join(RESET_OPTIONS)}"
                )
        index = (options or {}).get("episode_index")
        if index is None:
            index = int(self.np_random.integers(len(self.episodes)))
        self._load_episode(self._checked_index(index, "options['episode_index']"))
        episode = self._episode
        self._position: Vec3 = episode.agent_position
        self._heading = float(episode.agent_heading)
        self._steps = 0
        self._done = self._stopped = False
        distance = self._distance(self._position)
        self._path: list[Vec3] = [self._position]
        self._distances: list[float] = [distance]
        self._expert: tuple[int, ...] | None = self._expert_now(episode.expert_actions, distance)
        if self.views == "record":
            self._history.reset(record_frames(episode, self.history_frames, self.image_size))
        elif self.views == "trajectory":
            self._history.reset(record_frames(episode, 1, self.image_size))
        else:
            self._history.reset([self._render_view()])
        return self._observation(), self._pose_info(distance)

    def step(self, action: Any) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        if self._episode is None or self._done:
            raise RuntimeError("call reset() before step() (the episode is over or never started)")
        actions, text, invalid, error = self._decode_action(action)
        prev_position, prev_heading, prev_distance = self._position, self._heading, self._distances[-1]
        expert_before = self._expert
        if self._world is not None and self.expert_plan == "next" and len(actions) > 1:
            expert_before = self._full_plan()  # a macro step is scored against the expert's sequence
        applied: list[int] = []
        stopped = collision = False
        position, heading = prev_position, prev_heading
        for sub_action in actions:
            applied.append(sub_action)
            if sub_action == STOP:
                stopped = True
                break
            if self._world is not None:
                position, heading, collision = self._world.move(
                    position, heading, sub_action, self.forward_step, self.turn_angle
                )
                position = (float(position[0]), float(position[1]), float(position[2]))
                heading = float(heading)
            else:
                position, heading = apply_action(
                    position, heading, sub_action, self.forward_step, self.turn_angle
                )
            # turns and refused steps keep the position, and with it the distance
            same = position == self._path[-1]
            self._path.append(position)
            self._distances.append(self._distances[-1] if same else self._distance(position))
            if collision:
                break
        self._position, self._heading, self._stopped = position, heading, stopped
        next_distance = self._distances[-1]
        applied_tuple = tuple(applied)
        transition = Transition(
            prev_position=prev_position,
            prev_heading=prev_heading,
            next_position=position,
            next_heading=heading,
            goal_position=self._goal,
            prev_distance=prev_distance,
            next_distance=next_distance,
            actions=applied_tuple,
            text=text,
            invalid_action=invalid,
            collision=collision,
            stopped=stopped,
            success_distance=self._success_distance,
            forward_step=self.forward_step,
            step_index=self._steps,
            expert_actions=expert_before,
            episode=self._episode_fields,
        )
        reward, terms = self.reward_fn(transition)
        self._steps += 1
        terminated = stopped or (self.views == "record" and self._steps >= self.max_steps)
        truncated = not terminated and self._steps >= self.max_steps
        self._done = terminated or truncated

        view_error = self._advance_view(applied_tuple)
        info = self._pose_info(next_distance)
        info["reward_terms"] = dict(terms)
        info["invalid_action"] = invalid
        info["collision"] = collision
        info["success"] = stopped and next_distance <= self._success_distance
        info["actions"] = applied_tuple
        if self.text_actions:
            info["action_error"] = error
        if view_error is not None:
            info["view_error"] = view_error
        if self._done:
            info["metrics"] = self._metrics(stopped)
        return self._observation(), float(reward), terminated, truncated, info

    def get_state(self) -> dict[str, Any]:
        """A snapshot of everything ``step`` reads: episode index, pose, step count, path, distances, expert
        actions, frame history and the env's RNG state.

        Plain data only (numbers, lists, a dict of ints for the RNG, and ``frames``: one uint8 array
        ``[n, H, W, 3]``), so it pickles, goes over a wire as JSON + raw bytes, and lives in a checkpoint
        without pickle. ``set_state`` of it makes the following steps bit-identical to the original's.
        """
        if self._episode is None:
            raise RuntimeError("call reset() before get_state() (no episode has started)")
        frames = self._history.frames()
        return {
            "episode_index": self._episode_index,
            "position": list(self._position),
            "heading": self._heading,
            "steps": self._steps,
            "done": self._done,
            "stopped": self._stopped,
            "path": [list(p) for p in self._path],
            "distances": list(self._distances),
            "expert": None if self._expert is None else list(self._expert),
            "frames": np.stack(frames) if frames else np.zeros((0, *self.image_size, 3), dtype=np.uint8),
            "rng": None if self._np_random is None else self._np_random.bit_generator.state,
        }

    def set_state(self, state: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Restore a ``get_state`` snapshot (of this env or of an env made with the same arguments).

        Returns ``(observation, info)`` of the restored moment, as ``reset`` does, so the caller has the
        observation in flight. Raises ``ValueError`` for a snapshot that does not fit this env.
        """
        if not isinstance(state, Mapping):
            raise ValueError(f"set_state needs a get_state() snapshot (a dict), got {type(state).__name__}")
        missing = [key for key in STATE_KEYS if key not in state]
        if missing:
            raise ValueError(f"set_state: the snapshot lacks {', '.join(missing)} (not from get_state())")
        index = self._checked_index(state.get("episode_index"), "state['episode_index']")
        frames = np.asarray(state["frames"])
        if frames.dtype != np.uint8 or frames.shape[1:] != (*self.image_size, 3):
            raise ValueError(
                f"state['frames'] must be uint8 [n, {self.image_size[0]}, {self.image_size[1]}, 3], "
                f"got {frames.dtype} {frames.shape}"
            )
        self._load_episode(index)
        self._position = _vec3(state["position"])
        self._heading = float(state["heading"])
        self._steps = int(state["steps"])
        self._done = bool(state["done"])
        self._stopped = bool(state.get("stopped", False))
        self._path = [_vec3(p) for p in state["path"]]
        self._distances = [float(d) for d in state["distances"]]
        expert = state.get("expert")
        self._expert = None if expert is None else tuple(int(a) for a in expert)
        self._history.reset(list(frames))
        if state.get("rng") is not None:
            rng = np.random.Generator(np.random.PCG64())
            rng.bit_generator.state = state["rng"]
            self._np_random = rng
        return self._observation(), self._pose_info(self._distances[-1])

    def render(self) -> np.ndarray | None:
        """``rgb_array`` of ``render_view``: ``"map"`` (top-down: path blue, reference green, goal and its
        success circle red), ``"view"`` (what the agent sees now, scaled to ``render_size``'s height) or
        ``"both"`` (map left, view right), so ``RecordVideo`` can record what the agent saw."""
        if self.render_mode is None:
            gym.logger.warn(
                "render() called with render_mode=None; make the env with render_mode='rgb_array'"
            )
            return None
        if self._episode is None:
            raise RuntimeError("call reset() before render()")
        if self.render_view == "view":
            return self._view_image()
        top_down = self._top_down()
        if self.render_view == "map":
            return top_down
        return np.concatenate([top_down, self._view_image()], axis=1)

    def _top_down(self) -> np.ndarray:
        reference = self._reference or (self._path[0], self._goal)
        if self._world is not None:
            return self._world.top_down(
                path=self._path,
                reference=reference,
                goal=self._goal,
                success_distance=self._success_distance,
                size=self.render_size,
            )
        return draw_top_down(
            self._path,
            reference,
            goal=self._goal,
            success_distance=self._success_distance,
            heading=self._heading,
            size=self.render_size,
        )

    def _view_image(self) -> np.ndarray:
        """The current first-person frame, nearest-neighbour scaled to the render height (even width)."""
        frame = self._history.frames()[-1]
        height = self.render_size[0]
        width = max(2, round(frame.shape[1] * height / frame.shape[0]) // 2 * 2)
        rows = np.arange(height) * frame.shape[0] // height
        cols = np.arange(width) * frame.shape[1] // width
        return np.ascontiguousarray(frame[rows][:, cols])

    # ------------------------------------------------------------------ step helpers

    def _checked_index(self, index: Any, name: str) -> int:
        """``index`` as an episode index, or a ValueError naming ``name`` and the valid range."""
        if not isinstance(index, int | np.integer) or not 0 <= index < len(self.episodes):
            raise ValueError(f"{name} must be an int in [0, {len(self.episodes)}), got {index!r}")
        return int(index)

    def _load_episode(self, index: int) -> None:
        """Set what follows from the episode alone: goal, success radius, world, reference, fields."""
        episode = self.episodes[index]
        self._episode = episode
        self._episode_index = index
        self._goal: Vec3 = episode.goal_position
        self._success_distance = (
            float(episode.success_distance) if episode.success_distance is not None else self.success_distance
        )
        self._world = world_for_episode(episode) if self.views == "world" else None
        if index not in self._references:
            self._references[index] = _remaining_reference(episode.reference_path, episode.agent_position)
        self._reference = self._references[index]
        self._episode_fields = {
            "episode_id": episode.episode_id,
            "instruction": episode.instruction,
            "expert_response": episode.expert_response,
            "trajectory_id": episode.trajectory_id,
            "step_index": episode.step_index,
        }

    def _decode_action(self, action: Any) -> tuple[tuple[int, ...], str | None, bool, str | None]:
        """``(action ids, text, invalid, parse error)``; bad discrete values raise (a caller bug)."""
        if self.text_actions:
            if not isinstance(action, str):
                raise TypeError(f"action_space='text' takes a str action, got {type(action).__name__}")
            if len(action) > TEXT_ACTION_MAX_LENGTH:
                error = f"answer of {len(action)} characters, over the {TEXT_ACTION_MAX_LENGTH} allowed"
                return (), action[:TEXT_ACTION_MAX_LENGTH], True, error
            parsed = parse_action(
                action,
                forward_step=self.forward_step,
                turn_angle=self.turn_angle,
                options=self.action_options,
            )
            if not parsed.valid:
                return (), action, True, parsed.error
            return parsed.actions, action, False, None
        if isinstance(action, np.ndarray) and action.ndim == 0:
            action = action.item()
        if (
            isinstance(action, bool)
            or not isinstance(action, int | np.integer)
            or int(action) not in _ACTION_IDS
        ):
            raise ValueError(
                f"a discrete action is an int in 0..3 (STOP, FORWARD, LEFT, RIGHT), got {action!r}"
            )
        return (int(action),), None, False, None

    def _advance_view(self, applied: tuple[int, ...]) -> float | None:
        """Update expert actions and the frame history after a step; returns the view error if any."""
        if self._world is not None:
            self._expert = self._expert_now(None, self._distances[-1])
            if not self._done:
                self._history.push(self._render_view())
            return None
        expert = self._expert
        if expert is not None and applied and expert[: len(applied)] == applied:
            self._expert = expert[len(applied) :] or None
        else:
            self._expert = None
        if self._replay is None:
            return None
        match = self._replay.nearest(self._episode.trajectory_id, self._position, self._heading)
        seen = self.episodes[match.episode_index]
        if self._expert is None and match.view_error <= 1e-6:
            self._expert = seen.expert_actions
        if not self._done:
            self._history.push(record_frames(seen, 1, self.image_size)[0])
        return match.view_error

    def _expert_now(self, recorded: tuple[int, ...] | None, distance: float) -> tuple[int, ...] | None:
        """The expert's actions from the current pose (``distance``: its distance to the goal)."""
        if self._world is None:
            return tuple(recorded) if recorded is not None else None
        if self.expert_plan == "next":
            action = self._world.next_expert_action(
                self._position,
                self._heading,
                self._goal,
                success_distance=self._success_distance,
                forward_step=self.forward_step,
                turn_angle=self.turn_angle,
                distance=distance,
            )
            return (int(action),)
        return self._full_plan()

    def _full_plan(self) -> tuple[int, ...]:
        """The expert's whole remaining plan from the current pose (world mode)."""
        return tuple(
            int(a)
            for a in self._world.expert_actions(
                self._position,
                self._heading,
                self._goal,
                success_distance=self._success_distance,
                forward_step=self.forward_step,
                turn_angle=self.turn_angle,
            )
        )

    def _distance(self, position: Vec3) -> float:
        if self._world is not None:
            return float(self._world.geodesic_distance(position, self._goal))
        return math.dist(position, self._goal)

    def _render_view(self) -> np.ndarray:
        frame = self._world.render(self._position, self._heading, size=self.image_size)
        return np.ascontiguousarray(frame, dtype=np.uint8)

    def _observation(self) -> dict[str, Any]:
        frames, mask = self._history.observation()
        return {"frames": frames, "frame_mask": mask, "instruction": self._episode.instruction}

    def _pose_info(self, distance: float) -> dict[str, Any]:
        info: dict[str, Any] = {
            "episode_id": self._episode.episode_id,
            "agent_position": self._position,
            "agent_heading": self._heading,
            "goal_position": self._goal,
            "distance_to_goal": distance,
        }
        if self._expert is not None:
            info["expert_actions"] = self._expert
        if self._episode.reference_path is not None:
            info["reference_path"] = self._episode.reference_path
        return info

    def episode_metrics(self) -> dict[str, Any]:
        """The episode metrics of the path so far (what the last step of an episode reports in ``info``);
        for an episode cut from outside, e.g. by a ``TimeLimit`` wrapper (see ``vln_gym.wrappers``)."""
        if self._episode is None:
            raise RuntimeError("call reset() before episode_metrics()")
        return self._metrics(self._stopped)

    def _metrics(self, stopped: bool) -> dict[str, Any]:
        """Episode-end metrics (a fresh dict); short paths are memoised, see ``_METRICS_MEMO_MAX_PATH``."""
        if len(self._path) > _METRICS_MEMO_MAX_PATH or self._world is not None:
            return self._compute_metrics(stopped)
        key = (self._episode_index, stopped, *self._path)
        cached = self._metrics_memo.get(key)
        if cached is None:
            if len(self._metrics_memo) >= _METRICS_MEMO_SIZE:
                self._metrics_memo.clear()
            cached = self._metrics_memo[key] = self._compute_metrics(stopped)
        return dict(cached)

    def _compute_metrics(self, stopped: bool) -> dict[str, Any]:
        if not all(math.isfinite(c) for c in (*self._path[0], *self._goal)):  # a record without a pose
            unknown = (
                "navigation_error",
                "success",
                "oracle_success",
                "spl",
                "trajectory_length",
                "ndtw",
                "sdtw",
            )
            return {
                **dict.fromkeys(unknown, math.nan),
                "steps": len(self._path) - 1,
                "distance_kind": "unknown",
            }
        geodesic = self._world is not None
        shortest = self._distances[0]
        if geodesic and self._episode.geodesic_distance is not None:
            shortest = float(self._episode.geodesic_distance)
        return episode_metrics(
            self._path,
            self._reference or (self._path[0], self._goal),
            self._goal,
            stopped,
            shortest,
            success_distance=self._success_distance,
            distances=self._distances,
            distance_kind="geodesic" if geodesic else "euclidean",
        )


def _check_choices(**choices: tuple[Any, Sequence[Any]]) -> None:
    """``name=(value, allowed)`` for each argument: a value outside ``allowed`` is a ValueError naming it."""
    for name, (value, allowed) in choices.items():
        if value not in allowed:
            raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}")


def _remaining_reference(reference: Sequence[Vec3] | None, start: Vec3) -> tuple[Vec3, ...] | None:
    """The reference from its point nearest to ``start`` on (a mid-trajectory record starts there)."""
    if not reference:
        return None
    nearest = min(range(len(reference)), key=lambda i: math.dist(reference[i], start))
    return tuple(reference[nearest:])


def _world_module() -> Any:
    """``vln_gym.world``, imported when an env first needs the built-in world."""
    import vln_gym.world as world

    return world


def world_for_episode(episode: Episode) -> Any:
    """The built-in world an episode's ``scene_id`` names (cached by ``vln_gym.world``)."""
    return _world_module().world_for_episode(episode)


def _vec3(value: Sequence[float]) -> Vec3:
    return (float(value[0]), float(value[1]), float(value[2]))
