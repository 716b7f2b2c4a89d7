"""Navigation truth: moves and collisions, geodesic distances, the expert, random-agent difficulty."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vln_gym.geometry import MOVE_FORWARD, STOP, TURN_LEFT, TURN_RIGHT
from vln_gym.world import UnreachableGoalError, World, WorldConfig, generate_episodes, world_for_episode


@pytest.fixture(scope="module")
def world() -> World:
    return World.generate(3)


@pytest.fixture(scope="module")
def episodes():
    return generate_episodes(seed=5, num_episodes=50)


def _room_point(world: World, room: int, fx: float, fz: float) -> tuple[float, float, float]:
    r, cell = world.layout.rooms[room], world.config.cell_size
    return (r.x0 * cell + fx, 0.0, r.z0 * cell + fz)


def _clearance(world: World, position) -> float:
    """Distance from the point to the nearest solid cell, by brute force over all solid cells."""
    cell = world.config.cell_size
    cells = np.argwhere(world.layout.solid)
    x0, z0 = cells[:, 1] * cell, cells[:, 0] * cell
    dx = np.maximum(np.maximum(x0 - position[0], 0.0), position[0] - (x0 + cell))
    dz = np.maximum(np.maximum(z0 - position[2], 0.0), position[2] - (z0 + cell))
    return float(np.hypot(dx, dz).min())


def test_moves_follow_habitat_kinematics_in_free_space(world: World) -> None:
    start = _room_point(world, 0, 1.5, 1.5)
    position, heading, collided = world.move(start, 0.0, MOVE_FORWARD)
    assert heading == 0.0
    assert not collided and position == pytest.approx((start[0], 0.0, start[2] - 0.25))
    position, _heading, _ = world.move(start, math.pi / 2, MOVE_FORWARD, forward_step=0.5)
    assert position == pytest.approx((start[0] - 0.5, 0.0, start[2]))
    assert world.move(start, 0.0, TURN_LEFT)[1] == pytest.approx(math.radians(15))
    assert world.move(start, 0.0, TURN_RIGHT, turn_angle=30)[1] == pytest.approx(math.radians(-30))
    assert world.move(start, 0.4, STOP) == (start, 0.4, False)
    with pytest.raises(ValueError, match="action must be"):
        world.move(start, 0.0, 7)


def test_a_step_into_a_wall_is_refused(world: World) -> None:
    start = _room_point(world, 0, 0.3, 1.5)  # 0.3 m east of the room's west wall
    assert world.is_navigable(start)
    position, heading, collided = world.move(start, math.pi / 2, MOVE_FORWARD)  # facing -x, into the wall
    assert collided and position == start and heading == math.pi / 2


def test_random_walks_never_enter_walls() -> None:
    rng = np.random.default_rng(0)
    collisions = 0
    for seed in range(4):
        world = World.generate(seed)
        start = _room_point(world, 0, 1.0, 1.0)
        position, heading = start, float(rng.uniform(-math.pi, math.pi))
        for action in rng.choice([1, 1, 1, 2, 3], size=400):
            position, heading, collided = world.move(position, heading, int(action))
            collisions += collided
            assert world.is_navigable(position)
        assert _clearance(world, position) >= world.config.agent_radius - 1e-9
    assert collisions > 0  # the walks did push against walls


def test_geodesic_is_never_below_euclidean(world: World) -> None:
    rng = np.random.default_rng(1)
    nz, nx = world.layout.solid.shape
    cell = world.config.cell_size
    points = []
    while len(points) < 120:
        p = (float(rng.uniform(0, nx * cell)), 0.0, float(rng.uniform(0, nz * cell)))
        if world.is_navigable(p):
            points.append(p)
    for a, b in zip(points[:60], points[60:], strict=True):
        geodesic = world.geodesic_distance(a, b)
        assert math.isfinite(geodesic)
        assert geodesic >= math.dist(a, b) - 1e-9
    assert world.geodesic_distance(points[0], points[0]) == 0.0


def test_geodesic_is_straight_in_an_open_room_and_longer_through_doors() -> None:
    world = World.generate(0, WorldConfig(rooms=2, landmarks=0))
    a, b = _room_point(world, 0, 1.0, 1.0), _room_point(world, 0, 2.2, 2.6)  # 2.0 m apart, visible
    assert world.geodesic_distance(a, b) == pytest.approx(2.0)
    far = _room_point(world, 0, 3.5, 3.5)
    # beyond the straight-line range the 16-connected field is within 3 % of the straight line
    assert math.dist(a, far) <= world.geodesic_distance(a, far) <= 1.03 * math.dist(a, far)
    other = _room_point(world, 1, 1.0, 1.0)
    assert world.geodesic_distance(a, other) > math.dist(a, other) + 0.1


def test_goal_inside_a_wall_is_an_error(world: World) -> None:
    with pytest.raises(UnreachableGoalError, match="inside a wall"):
        world.geodesic_distance(_room_point(world, 0, 1, 1), (0.1, 0.0, 0.1))


def test_oracle_succeeds_on_every_generated_episode(episodes) -> None:
    for episode in episodes:
        world = world_for_episode(episode)
        actions = episode.expert_actions
        assert actions[-1] == STOP and STOP not in actions[:-1]
        poses = world.follow(episode.agent_position, episode.agent_heading, actions)
        assert not any(collided for _, _, collided in poses)
        final = poses[-1][0]
        assert world.geodesic_distance(final, episode.goal_position) <= min(episode.success_distance, 0.25)
        assert [p for (p, _, _), a in zip(poses, actions, strict=True) if a == MOVE_FORWARD] == list(
            episode.reference_path[1:]
        )


def test_expert_recovers_from_random_detours(episodes) -> None:
    rng = np.random.default_rng(2)
    for episode in episodes[:15]:
        world = world_for_episode(episode)
        position, heading = episode.agent_position, episode.agent_heading
        for action in rng.choice([1, 1, 2, 3], size=30):
            position, heading, _ = world.move(position, heading, int(action))
        actions = world.expert_actions(position, heading, episode.goal_position, episode.success_distance)
        final = world.follow(position, heading, actions)[-1][0]
        assert world.geodesic_distance(final, episode.goal_position) <= episode.success_distance


def test_expert_plans_are_consistent_along_the_path(episodes) -> None:
    episode = episodes[0]
    world = world_for_episode(episode)
    actions = list(episode.expert_actions)
    position, heading = episode.agent_position, episode.agent_heading
    for k in range(len(actions) - 1):
        assert (
            world.expert_actions(position, heading, episode.goal_position, episode.success_distance)
            == actions[k:]
        )
        position, heading, _ = world.move(position, heading, actions[k])


def test_expert_path_is_close_to_the_geodesic(episodes) -> None:
    for episode in episodes:
        steps = sum(1 for a in episode.expert_actions if a == MOVE_FORWARD)
        walked = 0.25 * steps
        # the 16-connected field overestimates straight lines by up to 3 %; the expert stops 0.25 m early
        assert 0.97 * episode.geodesic_distance - 0.25 <= walked <= 1.2 * episode.geodesic_distance + 0.5


def test_random_agent_almost_never_succeeds(episodes) -> None:
    rng = np.random.default_rng(3)
    successes = 0
    for episode in episodes:
        world = world_for_episode(episode)
        position, heading = episode.agent_position, episode.agent_heading
        for _ in range(500):
            action = int(rng.integers(4))
            if action == STOP:
                break
            position, heading, _ = world.move(position, heading, action)
        successes += world.geodesic_distance(position, episode.goal_position) <= episode.success_distance
    assert successes / len(episodes) <= 0.04


def _walk_next_expert(world: World, position, heading, goal, success_distance, turn_angle=15.0, limit=2000):
    """Take ``next_expert_action`` until STOP: ``(actions, final position)``; no step may collide."""
    actions = []
    for _ in range(limit):
        action = world.next_expert_action(position, heading, goal, success_distance, 0.25, turn_angle)
        actions.append(action)
        if action == STOP:
            return actions, position
        position, heading, collided = world.move(position, heading, action, 0.25, turn_angle)
        assert not collided
    raise AssertionError(f"no STOP after {limit} expert actions")


def test_next_expert_action_walks_the_stored_plan_and_recovers_from_detours(episodes) -> None:
    rng = np.random.default_rng(4)
    for episode in episodes:  # 50 episodes
        world = world_for_episode(episode)
        goal, radius = episode.goal_position, episode.success_distance
        world.navigator.clear_memo()  # every decision below is the greedy rule, not a stored plan
        actions, final = _walk_next_expert(world, episode.agent_position, episode.agent_heading, goal, radius)
        assert tuple(actions) == episode.expert_actions
        assert world.geodesic_distance(final, goal) <= min(radius, 0.25)
        world.navigator.clear_memo()
        position, heading = episode.agent_position, episode.agent_heading
        for action in rng.choice([1, 1, 2, 3], size=12):  # leave the plan first
            position, heading, _ = world.move(position, heading, int(action))
        _, final = _walk_next_expert(world, position, heading, goal, radius)
        assert world.geodesic_distance(final, goal) <= radius


def test_next_expert_action_by_hand(world: World) -> None:
    start = _room_point(world, 0, 1.5, 3.5)
    ahead = (start[0], 0.0, start[2] - 2.0)  # 2 m along -z: straight ahead at heading 0
    world.navigator.clear_memo()
    assert world.next_expert_action(start, 0.0, ahead) == MOVE_FORWARD
    assert world.next_expert_action(start, math.pi / 2, ahead) == TURN_RIGHT  # facing -x: goal on the right
    assert world.next_expert_action(start, -math.pi / 2, ahead) == TURN_LEFT  # facing +x: goal on the left
    near = (start[0], 0.0, start[2] - 0.2)
    assert world.next_expert_action(start, 2.0, near) == STOP  # within min(success, forward step)
    distance = world.geodesic_distance(start, ahead)
    assert world.next_expert_action(start, 0.0, ahead, distance=distance) == MOVE_FORWARD
    with pytest.raises(UnreachableGoalError, match="inside a wall"):
        world.next_expert_action(start, 0.0, (0.1, 0.0, 0.1))


def test_next_expert_action_is_the_plans_first_action(episodes) -> None:
    rng = np.random.default_rng(6)
    seen = set()
    for episode in episodes[::5]:
        world = world_for_episode(episode)
        width, depth = world.extent
        goal = episode.goal_position
        for _ in range(40):
            position = (float(rng.uniform(0, width)), 0.0, float(rng.uniform(0, depth)))
            if not world.is_navigable(position):
                continue
            heading = float(rng.uniform(-math.pi, math.pi))
            world.navigator.clear_memo()
            action = world.next_expert_action(position, heading, goal, 1.0)
            world.navigator.clear_memo()
            assert action == world.expert_actions(position, heading, goal, 1.0)[0]
            seen.add(action)
        near = (goal[0] + 0.1, 0.0, goal[2])
        if world.is_navigable(near):
            world.navigator.clear_memo()
            assert (
                world.next_expert_action(near, 0.3, goal, 1.0)
                == STOP
                == world.expert_actions(near, 0.3, goal)[0]
            )
            seen.add(STOP)
    assert seen == {STOP, MOVE_FORWARD, TURN_LEFT, TURN_RIGHT}


def test_next_expert_action_plans_in_full_where_greedy_is_stuck(episodes) -> None:
    # With 90-degree turns only four headings are on offer, so some poses have no improving step and the
    # expert needs its bounded search: next_expert_action must then give the plan's action and continue it.
    rng = np.random.default_rng(0)
    stuck = 0
    for episode in episodes[::5]:
        world = world_for_episode(episode)
        navigator, goal = world.navigator, episode.goal_position
        width, depth = world.extent
        for _ in range(2000):
            position = (float(rng.uniform(0, width)), 0.0, float(rng.uniform(0, depth)))
            if not world.is_navigable(position):
                continue
            distance = world.geodesic_distance(position, goal)
            if (
                distance <= 1.0
                or navigator._greedy_turn(position, 0.0, distance, goal, 0.25, 90.0) is not None
            ):
                continue
            stuck += 1
            navigator.clear_memo()
            first = world.expert_actions(position, 0.0, goal, 1.0, 0.25, 90.0)[0]
            navigator.clear_memo()
            assert world.next_expert_action(position, 0.0, goal, 1.0, 0.25, 90.0) == first
            _, final = _walk_next_expert(world, position, 0.0, goal, 1.0, turn_angle=90.0)
            assert world.geodesic_distance(final, goal) <= 1.0
            break
    assert stuck >= 3
