"""Generated episodes and their instructions."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from vln_gym.geometry import MOVE_FORWARD, TURN_LEFT, TURN_RIGHT
from vln_gym.world import (
    WorldConfig,
    generate_episodes,
    parse_scene_id,
    world_for_episode,
    world_from_scene_id,
)
from vln_gym.world.episodes import WorldEpisodes, generate_episode, instruction_length_limit
from vln_gym.world.instructions import Event, _simplify, describe, initial_turn, path_events


@pytest.fixture(scope="module")
def episodes():
    return generate_episodes(seed=2, num_episodes=24, episodes_per_world=6)


def test_same_arguments_same_episodes_and_seed_matters(episodes) -> None:
    assert generate_episodes(seed=2, num_episodes=24, episodes_per_world=6) == episodes
    other = generate_episodes(seed=3, num_episodes=3)
    assert [e.agent_position for e in other] != [e.agent_position for e in episodes[:3]]


def test_episode_fields(episodes) -> None:
    config = WorldConfig()
    scenes = set()
    for index, episode in enumerate(episodes):
        assert episode.episode_id == f"world-s2-e{index}"
        assert episode.images == ()
        seed, parsed = parse_scene_id(episode.scene_id)
        assert parsed == config
        scenes.add(seed)
        world = world_for_episode(episode)
        assert world.is_navigable(episode.agent_position) and world.is_navigable(episode.goal_position)
        assert episode.distance_to_goal == episode.geodesic_distance
        assert episode.geodesic_distance == pytest.approx(
            world.geodesic_distance(episode.agent_position, episode.goal_position)
        )
        assert config.min_path_length <= episode.geodesic_distance <= config.max_path_length
        assert -math.pi <= episode.agent_heading < math.pi
        assert episode.success_distance == 1.0
        assert episode.expert_actions[-1] == 0
        assert episode.reference_path[0] == episode.agent_position
        assert len(episode.reference_path) == 1 + episode.expert_actions.count(MOVE_FORWARD)
        assert episode.instruction.endswith(".") and episode.instruction[0].isupper()
    assert len(scenes) == 4  # 24 episodes, 6 per world


def test_instructions_name_the_stop(episodes) -> None:
    with_landmark = 0
    for episode in episodes:
        landmark = episode.extra["goal_landmark"]
        world = world_for_episode(episode)
        if landmark is not None:
            with_landmark += 1
            assert landmark in episode.instruction.split(". ")[-1] or landmark in episode.instruction
            found = [lm for lm in world.landmarks if lm.name == landmark]
            assert (
                found
                and math.dist(found[0].position, (episode.goal_position[0], episode.goal_position[2])) < 2.5
            )
        else:
            room = world.layout.region_name(world.region_at(episode.goal_position))
            assert f"{room}." in episode.instruction
    assert 0 < with_landmark < len(episodes)


def test_instructions_vary(episodes) -> None:
    assert len({e.instruction for e in episodes}) == len(episodes)
    starts = {e.instruction.split()[0] for e in episodes}
    assert len(starts) >= 3


def test_config_and_arguments_are_respected() -> None:
    config = WorldConfig(rooms=2, landmarks=1, min_path_length=3.0, max_path_length=6.0, success_distance=0.5)
    for episode in generate_episodes(
        seed=0, num_episodes=5, config=config, turn_angle=30.0, forward_step=0.5
    ):
        assert 3.0 <= episode.geodesic_distance <= 6.0 and episode.success_distance == 0.5
        world = world_for_episode(episode)
        final = world.follow(
            episode.agent_position, episode.agent_heading, episode.expert_actions, 0.5, 30.0
        )[-1][0]
        assert world.geodesic_distance(final, episode.goal_position) <= 0.5
    with pytest.raises(ValueError, match="seed must be an integer >= 0, got -1"):
        generate_episodes(seed=-1, num_episodes=1)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"forward_step": math.inf}, "forward_step must be a finite number >= 0.01, got inf"),
        ({"forward_step": 0.001}, "forward_step must be a finite number >= 0.01"),
        ({"forward_step": "0.25"}, "forward_step must be a finite number"),
        ({"turn_angle": math.nan}, r"turn_angle must be a finite number in \(0, 180\], got nan"),
        ({"turn_angle": 720.0}, r"turn_angle must be a finite number in \(0, 180\]"),
        ({"turn_angle": 0}, r"turn_angle must be a finite number in \(0, 180\]"),
        ({"success_distance": -1.0}, "success_distance must be a finite number > 0"),
        ({"success_distance": math.nan}, "success_distance must be a finite number > 0"),
        ({"episodes_per_world": 0}, "episodes_per_world must be an integer >= 1"),
        ({"episodes_per_world": 2.5}, "episodes_per_world must be an integer >= 1"),
    ],
)
def test_bad_generation_arguments_are_one_line_errors(arguments: dict, message: str) -> None:
    """The Python API checks what make-world's flags check (before: raw OverflowError / ValueError from
    numpy, a RuntimeError after 20 draws, no answer within 20 s on NaN success_distance, 4,439-step
    paths at 1 mm)."""
    for build in (
        lambda: generate_episodes(0, 1, **arguments),
        lambda: generate_episode(0, 0, **arguments),
        lambda: WorldEpisodes(0, 1, **arguments),
    ):
        with pytest.raises(ValueError, match=message):
            build()


def test_initial_turn() -> None:
    assert initial_turn([TURN_LEFT] * 3 + [MOVE_FORWARD], 15.0) == "left"
    assert initial_turn([TURN_RIGHT] * 9 + [MOVE_FORWARD], 15.0) == "around"
    assert initial_turn([TURN_RIGHT] * 2 + [MOVE_FORWARD], 30.0) == "right"
    assert initial_turn([TURN_LEFT, TURN_RIGHT, MOVE_FORWARD, TURN_LEFT, TURN_LEFT, TURN_LEFT], 15.0) is None


def test_simplify_keeps_the_corner_of_an_l() -> None:
    leg1 = [(0.0, z) for z in np.arange(0, 3.01, 0.25)]
    leg2 = [(x, 3.0) for x in np.arange(0.25, 3.01, 0.25)]
    points = np.asarray(leg1 + leg2)
    assert _simplify(points, 0.2) == [0, len(leg1) - 1, len(points) - 1]


def test_path_events_see_turns_rooms_and_landmarks(episodes) -> None:
    kinds = set()
    for episode in episodes:
        world = world_for_episode(episode)
        events = path_events(world.layout, episode.reference_path)
        kinds |= {e.kind for e in events}
        assert [e.index for e in events] == sorted(e.index for e in events)
        start_room = world.layout.region_name(world.region_at(episode.agent_position))
        goal_room = world.layout.region_name(world.region_at(episode.goal_position))
        if start_room != goal_room:
            assert any(e.kind == "enter" and e.text == goal_room for e in events)
            assert events[0].kind in ("exit", "turn", "pass", "door")
    assert {"turn", "exit", "enter", "pass"} <= kinds


def test_describe_is_seeded_and_mentions_every_event() -> None:
    events = [
        Event(3, "exit", "the blue room"),
        Event(5, "enter", "the hallway"),
        Event(9, "turn", "left"),
        Event(10, "enter", "the green room"),
        Event(14, "pass", "the red pillar"),
    ]

    def text(seed: int) -> str:
        return describe(
            np.random.default_rng(seed),
            events,
            first_turn="around",
            goal_landmark=None,
            goal_room="the green room",
        )

    assert text(0) == text(0)
    assert len({text(s) for s in range(10)}) > 5
    for seed in range(10):
        t = text(seed).lower()
        assert t.startswith(("turn around", "turn back"))
        assert "blue room" in t and "hallway" in t and "left" in t and "green room" in t and "red pillar" in t
        assert t.endswith("the green room.")


def test_generate_episode_is_the_same_episode_alone(episodes) -> None:
    world_from_scene_id.cache_clear()  # fresh worlds, no memoised plans: each episode is built from scratch
    for index in (23, 7, 0, 12, 6):
        assert generate_episode(2, index, episodes_per_world=6) == episodes[index]
    assert generate_episode(2, 5, WorldConfig(), episodes_per_world=6).episode_id == "world-s2-e5"
    with pytest.raises(ValueError, match="episode index must be >= 0"):
        generate_episode(2, -1)


def test_world_episodes_build_each_episode_when_first_indexed(episodes) -> None:
    lazy = WorldEpisodes(2, 24, episodes_per_world=6)
    assert len(lazy) == 24 and lazy.generated == 0
    assert lazy[13] == episodes[13] and lazy.generated == 1
    assert lazy[13] is lazy[13] and lazy.generated == 1  # kept, not rebuilt
    assert lazy[-1] == episodes[23] and lazy[np.int64(2)] == episodes[2]
    assert lazy[3:6] == episodes[3:6] and lazy.generated == 6
    copy = pickle.loads(pickle.dumps(lazy))
    assert copy.generated == 6 and copy[20] == episodes[20]
    with pytest.raises(IndexError, match="out of range for 24 episodes"):
        lazy[24]
    with pytest.raises(TypeError, match="int or a slice"):
        lazy["3"]
    with pytest.raises(ValueError, match="num_episodes must be >= 0"):
        WorldEpisodes(2, -1)


def test_instructions_stay_within_the_declared_limit(episodes) -> None:
    assert instruction_length_limit(WorldConfig()) == 1024
    long_paths = WorldConfig(min_path_length=10.0, max_path_length=30.0)
    assert instruction_length_limit(long_paths) == 128 + 48 * 30
    lazy = WorldEpisodes(4, 6, long_paths)
    assert lazy.max_instruction_length == 128 + 48 * 30
    assert all(len(e.instruction) <= lazy.max_instruction_length for e in lazy)
    assert all(len(e.instruction) <= 1024 for e in episodes)


def test_draws_the_action_set_cannot_complete_are_redrawn() -> None:
    """Regression: with 0.5 m steps and 90-degree turns the agent moves on a lattice set by its start
    heading; episode 18 of world seed 1000 first draws a start in a 1 m corridor whose lattice (rotated
    57 degrees) never gets closer to the goal, although the free-space geodesic is 1.24 m. Generation used to
    raise UnreachableGoalError there; such a draw is now redrawn."""
    from vln_gym.world import UnreachableGoalError
    from vln_gym.world.config import scene_id
    from vln_gym.world.episodes import _sample, world_seed

    config = WorldConfig(min_path_length=1.0, max_path_length=3.0)
    seed, index, step, turn = 1000, 18, 0.5, 90.0
    world = world_from_scene_id(scene_id(world_seed(seed, index // 10), config))
    rng = np.random.default_rng([seed, index])
    start, goal, geodesic, _ = _sample(rng, world, config)
    heading = float(rng.uniform(-math.pi, math.pi))
    assert 1.0 <= geodesic <= 3.0
    with pytest.raises(UnreachableGoalError, match="stuck"):
        world.expert_actions(start, heading, goal, 1.0, step, turn)

    episode = generate_episode(seed, index, config, forward_step=step, turn_angle=turn)
    assert episode.agent_position != start
    for ep in [episode, *generate_episodes(seed, 60, config, forward_step=step, turn_angle=turn)]:
        poses = world_for_episode(ep).follow(
            ep.agent_position, ep.agent_heading, ep.expert_actions, step, turn
        )
        final = poses[-1][0]
        assert math.dist(final, ep.goal_position) <= ep.success_distance, ep.episode_id
        assert ep.expert_actions[-1] == 0  # ends with STOP


def test_episodes_the_expert_completes_are_unchanged_by_redrawing() -> None:
    """Only draws the expert cannot complete are redrawn: an episode whose first draw works keeps it."""
    from vln_gym.world.config import scene_id
    from vln_gym.world.episodes import _sample, world_seed

    config = WorldConfig(min_path_length=1.0, max_path_length=3.0)
    world = world_from_scene_id(scene_id(world_seed(1000, 1), config))
    rng = np.random.default_rng([1000, 17])
    start, goal, _, _ = _sample(rng, world, config)
    heading = float(rng.uniform(-math.pi, math.pi))
    episode = generate_episode(1000, 17, config, forward_step=0.5, turn_angle=90.0)
    assert (episode.agent_position, episode.agent_heading, episode.goal_position) == (start, heading, goal)


def test_world_config_coerce_accepts_none_instance_and_fields():
    from vln_gym.world import WorldConfig

    assert WorldConfig.coerce(None) == WorldConfig()
    custom = WorldConfig(rooms=3)
    assert WorldConfig.coerce(custom) is custom
    expected = WorldConfig(rooms=3, min_path_length=2.0)
    assert WorldConfig.coerce({"rooms": 3, "min_path_length": 2.0}) == expected
    with pytest.raises(ValueError, match=r"world_config: .*nosuch"):
        WorldConfig.coerce({"nosuch": 1})
    with pytest.raises(ValueError, match=r"WorldConfig\.rooms"):
        WorldConfig.coerce({"rooms": 0})
    with pytest.raises(ValueError, match="mapping of its fields"):
        WorldConfig.coerce([("rooms", 3)])
