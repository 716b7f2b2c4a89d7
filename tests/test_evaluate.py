"""`vln-gym evaluate`: aggregation, rollout bookkeeping, output files, determinism, error paths, and the
agents' metrics on the built-in world and on the real VLN-Ego sample."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from agents.eval.evaluate import aggregate_metrics, evaluate, main
from vln_gym.episode import Episode

METRIC_KEYS = {
    "success_rate",
    "spl",
    "oracle_success_rate",
    "navigation_error",
    "trajectory_length",
    "ndtw",
    "sdtw",
    "steps",
    "invalid_action_rate",
    "reward",
    "episodes",
    "distance_kind",
}


def _episode_metrics(success, spl, ne, steps, kind="euclidean"):
    return {
        "success": success,
        "spl": spl,
        "oracle_success": success,
        "navigation_error": ne,
        "trajectory_length": 1.0,
        "ndtw": 0.5,
        "sdtw": 0.5 * success,
        "steps": steps,
        "invalid_action_rate": 0.0,
        "reward": 10.0 * success - 0.5 * steps,
        "distance_kind": kind,
    }


def test_aggregate_metrics_mean_std_ci_hand_computed():
    result = aggregate_metrics([_episode_metrics(1.0, 0.8, 1.0, 4), _episode_metrics(0.0, 0.0, 3.0, 8)])
    assert result["success_rate"] == 0.5
    assert result["spl"] == pytest.approx(0.4)
    assert result["navigation_error"] == 2.0
    assert result["steps"] == 6.0
    assert result["reward"] == pytest.approx(((10.0 - 2.0) + (0.0 - 4.0)) / 2)
    assert result["episodes"] == 2
    assert result["distance_kind"] == "euclidean"
    # sample std of (1, 0) = sqrt(0.5); rates get Wilson intervals: 1 of 2 -> [0.0945, 0.9055]
    assert result["std"]["success_rate"] == pytest.approx(math.sqrt(0.5))
    assert result["ci95"]["success_rate"] == pytest.approx([0.09453, 0.90547], abs=1e-5)
    # other metrics: mean +- 1.96 std / sqrt(n), clipped at their bounds; SPL of (0.8, 0.0): std 0.5657,
    # half width 0.784: [-0.384, 1.184] clipped to [0, 1]
    assert result["ci95"]["spl"] == [0.0, 1.0]
    assert result["std"]["navigation_error"] == pytest.approx(math.sqrt(2.0))
    # NE of (1, 3): half width 1.96 * sqrt(2) / sqrt(2) = 1.96 -> [0.04, 3.96], inside [0, inf): unclipped
    assert result["ci95"]["navigation_error"] == pytest.approx([2.0 - 1.96, 2.0 + 1.96])
    # the reward (8, -4) is unbounded: [2 - 11.76, 2 + 11.76]; NE (0.5, 3.5) would reach below 0: clipped
    assert result["ci95"]["reward"] == pytest.approx([2.0 - 11.76, 2.0 + 11.76], abs=1e-2)
    near = aggregate_metrics([_episode_metrics(1.0, 0.8, 0.1, 1), _episode_metrics(0.0, 0.0, 3.5, 30)])
    assert near["ci95"]["navigation_error"] == pytest.approx([0.0, 1.8 + 3.332], abs=1e-3)
    assert near["ci95"]["steps"] == pytest.approx([0.0, 15.5 + 28.42], abs=1e-2)
    mixed = aggregate_metrics(
        [_episode_metrics(1.0, 1.0, 0.0, 1), _episode_metrics(1.0, 1.0, 0.0, 1, "geodesic")]
    )
    assert mixed["distance_kind"] == "mixed"
    single = aggregate_metrics([_episode_metrics(1.0, 1.0, 0.5, 3)])
    assert single["std"]["spl"] == 0.0 and single["ci95"]["spl"] == [1.0, 1.0]
    # 100% success is not a certainty: 20 of 20 -> [0.839, 1.0]
    low, high = aggregate_metrics([_episode_metrics(1.0, 1.0, 0.5, 3)] * 20)["ci95"]["success_rate"]
    assert low == pytest.approx(0.8389, abs=1e-4) and high == 1.0


def _episodes(vln_ego_trajectory: Path) -> list[Episode]:
    """Five one-image records, goal (1 + i) m ahead; the expert's first action is STOP on even ids."""
    episodes = []
    for i in range(5):
        goal = (0.0, 0.0, -1.0 - i)  # straight ahead, (1 + i) m
        episodes.append(
            Episode(
                episode_id=f"hand-{i}",
                instruction=f"walk {1 + i} metres ahead",
                images=(str(vln_ego_trajectory / f"step_{i}.jpg"),),
                agent_position=(0.0, 0.0, 0.0),
                agent_heading=0.0,
                goal_position=goal,
                distance_to_goal=1.0 + i,
                expert_actions=(0,) if i % 2 == 0 else (1, 0),
                reference_path=((0.0, 0.0, 0.0), goal),
                trajectory_id=f"t{i}",
                step_index=0,
            )
        )
    return episodes


def test_expert_in_record_mode_metrics_and_files(tmp_path, vln_ego_trajectory):
    result = evaluate(
        "expert",
        env_kwargs={"episodes": _episodes(vln_ego_trajectory), "image_size": [32, 32]},
        num_episodes=None,
        out_dir=tmp_path / "out",
    )
    # One decision per record: STOP on even ids (success only within 3 m: ids 0, 2), else one step forward.
    successes = [record["metrics"]["success"] for record in result.episodes]
    assert [record["id"] for record in result.episodes] == [f"hand-{i}" for i in range(5)]
    assert successes == [True, False, True, False, False]
    assert [record["actions"] for record in result.episodes] == [[0], [1], [0], [1], [0]]
    assert result.episodes[1]["path"] == [[0.0, 0.0, 0.0], pytest.approx([0.0, 0.0, -0.25])]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(metrics) >= METRIC_KEYS
    assert metrics["success_rate"] == pytest.approx(0.4)
    assert metrics["episodes"] == 5 and metrics["steps"] == pytest.approx(0.4)  # moves: STOP is not one
    assert metrics["distance_kind"] == "euclidean"
    assert metrics["reward"] == pytest.approx(sum(r["reward"] for r in result.episodes) / 5)
    assert result.episodes[0]["metrics"]["reward"] == result.episodes[0]["reward"]
    assert set(metrics["std"]) == set(metrics["ci95"]) == METRIC_KEYS - {"episodes", "distance_kind"}
    lines = (tmp_path / "out" / "episodes.jsonl").read_text().splitlines()
    assert len(lines) == 5
    first = json.loads(lines[0])
    assert {"id", "actions", "path", "metrics", "reward_terms", "reward"} <= set(first)
    assert first["metrics"]["success"] == 1.0 and first["reward_terms"]
    report_md = (tmp_path / "out" / "report.md").read_text()
    assert "| expert |" in report_md and "40.0%" in report_md
    for picture in ("trajectories.png", "frames.png", "navigation_error.png"):
        assert (tmp_path / "out" / picture).stat().st_size > 1000
        assert picture in report_md


def test_same_seed_identical_files_whatever_num_envs(tmp_path, vln_ego_trajectory):
    kwargs = {
        "episodes": _episodes(vln_ego_trajectory),
        "views": "trajectory",
        "max_steps": 12,
        "image_size": [16, 16],
    }
    for name, envs, seed in (("a", 1, 7), ("b", 3, 7), ("c", 1, 8)):
        evaluate(
            "random", env_kwargs=kwargs, num_episodes=5, num_envs=envs, seed=seed, out_dir=tmp_path / name
        )
    for file in ("metrics.json", "episodes.jsonl", "report.md", "trajectories.png", "frames.png"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes(), file
    assert (tmp_path / "a" / "episodes.jsonl").read_bytes() != (
        tmp_path / "c" / "episodes.jsonl"
    ).read_bytes()


def test_straight_oracle_in_trajectory_mode_reaches_goals(tmp_path, vln_ego_trajectory):
    kwargs = {
        "episodes": _episodes(vln_ego_trajectory),
        "views": "trajectory",
        "max_steps": 40,
        "image_size": [16, 16],
    }
    result = evaluate("oracle", env_kwargs=kwargs, num_episodes=None, num_envs=2)
    assert result.metrics["success_rate"] == 1.0
    # Goals straight ahead at 1..5 m: 4 * (1 + i) forward steps then STOP, a perfect SPL.
    assert [len(r["actions"]) for r in result.episodes] == [4 * (1 + i) + 1 for i in range(5)]
    assert result.metrics["spl"] == pytest.approx(1.0)
    assert result.metrics["navigation_error"] == pytest.approx(0.0, abs=1e-9)


def test_text_env_gets_formatted_actions(vln_ego_trajectory):
    kwargs = {"episodes": _episodes(vln_ego_trajectory), "image_size": [16, 16], "action_space": "text"}
    result = evaluate("expert", env_kwargs=kwargs, num_episodes=2)
    assert [r["actions"] for r in result.episodes] == [[0], [1]]
    assert result.metrics["invalid_action_rate"] == 0.0


# ---------------------------------------------------------------- CLI error paths


def _one_error_line(capsys, argv) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


def test_cli_errors_exit_2_with_one_line(capsys, tmp_path):
    assert "unknown agent 'walker'" in _one_error_line(capsys, ["--agent", "walker"])
    assert "checkpoint not found" in _one_error_line(
        capsys, ["--agent", "policy", "--checkpoint", str(tmp_path / "nope")]
    )
    other = tmp_path / "bert"
    other.mkdir()
    (other / "config.json").write_text('{"model_type": "bert"}')
    assert "model_type 'bert'" in _one_error_line(capsys, ["--agent", "policy", "--checkpoint", str(other)])
    not_zip = tmp_path / "model.zip"
    not_zip.write_text("hello")
    assert "not a stable-baselines3 checkpoint" in _one_error_line(
        capsys, ["--agent", "sb3", "--checkpoint", str(not_zip)]
    )
    fake_zip = tmp_path / "crafted.zip"
    import zipfile

    with zipfile.ZipFile(fake_zip, "w") as archive:
        archive.writestr("data", "{}")
    assert "pass --trust-checkpoint" in _one_error_line(
        capsys, ["--agent", "sb3", "--checkpoint", str(fake_zip)]
    )
    assert "--env-kwargs is not JSON" in _one_error_line(
        capsys, ["--agent", "random", "--env-kwargs", "{bad"]
    )
    assert "data path not found" in _one_error_line(
        capsys, ["--agent", "expert", "--data", str(tmp_path / "none.jsonl")]
    )
    assert "error: argument --episodes" in _one_error_line(
        capsys, ["--agent", "random", "--episodes", "many"]
    )
    unknown_kwarg = _one_error_line(
        capsys, ["--agent", "random", "--env-kwargs", '{"nosuch": 1}', "--out", str(tmp_path / "ev")]
    )
    assert unknown_kwarg.endswith("unexpected keyword argument 'nosuch'")
    assert "Episode(" not in unknown_kwarg  # not gymnasium's dump of every episode passed to the env


def test_cli_data_failing_validation_exit_2(capsys, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"format": "vln-gym/1", "id": "x", "instruction": "go"}\n{not json\n', encoding="utf-8")
    line = _one_error_line(capsys, ["--agent", "expert", "--data", str(bad), "--out", str(tmp_path / "o")])
    assert "data failed validation" in line and "bad.jsonl" in line
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------- real VLN-Ego sample, dataset mode


def test_expert_on_real_vln_ego_sample(tmp_path, vln_ego_sample, capsys):
    data = vln_ego_sample / "rgb_images_r2r_debug"
    out = tmp_path / "ego"
    argv = [
        "--agent",
        "expert",
        "--data",
        str(data),
        "--env-kwargs",
        '{"format": "vln-ego", "image_size": [32, 32]}',
    ]
    assert main([*argv, "--all", "--out", str(out), "--no-plots"]) == 0
    assert "expert" in capsys.readouterr().out
    records = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert len(records) == 65
    last = next(r for r in records if r["id"].endswith("step_64"))
    assert last["actions"] == [0]  # the final record's expert action is STOP at the goal
    assert last["metrics"]["success"] == 1.0 and last["metrics"]["navigation_error"] == pytest.approx(
        0.0, abs=1e-6
    )
    # Every other record's expert action is a move; one decision each, so no other success is possible
    # beyond the records already within 3 m of the goal that STOP - and the expert never STOPs early.
    assert all(r["actions"] != [0] for r in records if r is not last)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["episodes"] == 65 and metrics["steps"] == pytest.approx(64 / 65)
    assert metrics["success_rate"] == pytest.approx(1 / 65)
    # Record mode: the decision metrics say what the episode ones cannot - every decision is the expert's.
    decision = metrics["decision"]
    assert decision["decisions"] == decision["decisions_with_expert"] == 65
    assert decision["first_action_accuracy"] == decision["sequence_accuracy"] == 1.0
    assert decision["invalid_answer_rate"] == 0.0
    assert decision["ci95"]["first_action_accuracy"][0] > 0.94  # Wilson, n = 65
    forwards = json.loads((data / "ep_2849" / "traj_1871" / "action_list.json").read_text()).count(1)
    assert decision["progress"] * 65 == pytest.approx(forwards * 0.25, rel=0.5)  # metres gained, all told
    report_md = (out / "report.md").read_text()
    assert "| first_action_accuracy | first action = expert's | 1.0000 |" in report_md
    assert "in record (dataset) mode each record is one decision" in report_md
    # A random agent on the same records: clearly below, with an interval that excludes the expert.
    random_out = tmp_path / "random"
    assert (
        main(
            [
                "--agent",
                "random",
                "--data",
                str(data),
                "--env-kwargs",
                argv[-1],
                "--all",
                "--out",
                str(random_out),
                "--no-plots",
            ]
        )
        == 0
    )
    random = json.loads((random_out / "metrics.json").read_text())["decision"]
    assert random["first_action_accuracy"] < 0.6 and random["ci95"]["first_action_accuracy"][1] < 0.94


# ---------------------------------------------------------------- built-in world (held-out episodes)


def test_oracle_and_random_on_held_out_world(tmp_path):
    oracle = evaluate("oracle", num_episodes=8, num_envs=2, out_dir=tmp_path / "oracle")
    assert oracle.metrics["success_rate"] == 1.0
    assert oracle.metrics["distance_kind"] == "geodesic"
    assert 0.85 <= oracle.metrics["spl"] <= 1.0  # turning overhead only
    random_agent = evaluate("random", num_episodes=20, num_envs=2, seed=1)
    assert random_agent.metrics["success_rate"] <= 0.1
    ids = [record["id"] for record in oracle.episodes]
    assert all("-s1000-" in episode_id for episode_id in ids), ids  # held-out world seed
    assert (tmp_path / "oracle" / "maps.png").is_file()


def test_held_out_world_shares_no_floor_plan_with_training():
    from agents.eval.evaluate import HELDOUT_WORLD_KWARGS
    from vln_gym.world import generate_episodes

    # The trainer's default env is the env's default world: world_seed 0 (first 100 of its episodes here).
    training = {episode.scene_id for episode in generate_episodes(seed=0, num_episodes=100)}
    held_out = generate_episodes(seed=HELDOUT_WORLD_KWARGS["world_seed"], num_episodes=100)
    assert len({episode.scene_id for episode in held_out}) >= 5
    assert not training & {episode.scene_id for episode in held_out}


def test_held_out_world_episodes_honour_world_config():
    from vln_gym.world import WorldConfig, generate_episodes

    config = {"min_path_length": 1.0, "max_path_length": 2.0, "success_distance": 0.5}
    env_kwargs = {"world_config": config, "forward_step": 0.5, "turn_angle": 45.0, "max_steps": 20}
    result = evaluate("oracle", env_kwargs=env_kwargs, num_episodes=4, num_envs=2, plots=False)
    expected = generate_episodes(1000, 4, WorldConfig(**config), forward_step=0.5, turn_angle=45.0)
    assert [r["id"] for r in result.episodes] == [e.episode_id for e in expected]
    assert [r["goal_position"] for r in result.episodes] == [list(e.goal_position) for e in expected]
    assert [r["path"][0] for r in result.episodes] == [list(e.agent_position) for e in expected]
    for record in result.episodes:
        assert record["success_distance"] == 0.5
        # routes of 1-2 m (the default world's are 4-16 m: the oracle would walk at least 3.5 m)
        assert record["metrics"]["success"] == 1.0 and record["metrics"]["trajectory_length"] < 3.0
    # a WorldConfig instance works too; a bad field is one clear error
    same = evaluate(
        "oracle", env_kwargs={**env_kwargs, "world_config": WorldConfig(**config)}, num_episodes=4
    )
    assert [r["id"] for r in same.episodes] == [r["id"] for r in result.episodes]
    assert same.episodes[0]["path"] == result.episodes[0]["path"]
    from agents.eval.evaluate import EvaluationError

    with pytest.raises(EvaluationError, match="world_config"):
        evaluate("oracle", env_kwargs={"world_config": {"no_such_field": 1}}, num_episodes=1)


# ------------------------------------------------------- SB3 baseline: saved, evaluated like the rest


def test_sb3_wrapper_train_save_and_evaluate(tmp_path, vln_ego_trajectory):
    from stable_baselines3.common.env_checker import check_env

    from agents.eval.agent import AgentError
    from agents.eval.sb3_baseline import SB3Agent, make_sb3_env, sb3_observation, train_sb3

    env_kwargs = {"episodes": _episodes(vln_ego_trajectory), "views": "trajectory", "max_steps": 6}
    env_kwargs["image_size"] = [48, 48]
    env = make_sb3_env(env_kwargs, size=40)
    check_env(env)
    obs, _ = env.reset(seed=0)
    assert set(obs) == {"frames", "frame_mask"}  # the instruction is dropped
    assert obs["frames"].shape == (40, 40, 6) and obs["frames"].dtype == np.uint8
    env.close()
    # channel stacking: frame k occupies channels 3k..3k+2, oldest first
    frames = np.stack([np.full((40, 40, 3), 10, np.uint8), np.full((40, 40, 3), 200, np.uint8)])
    stacked = sb3_observation({"frames": frames, "frame_mask": np.array([0, 1], np.int8)}, 40)
    assert stacked["frames"][0, 0].tolist() == [10, 10, 10, 200, 200, 200]
    assert stacked["frame_mask"].tolist() == [0.0, 1.0]

    path = train_sb3(tmp_path / "ppo.zip", total_timesteps=64, env_kwargs=env_kwargs, size=40, n_steps=32)
    assert path.is_file()
    with pytest.raises(AgentError, match="pickle, which runs any code"):
        SB3Agent(path)
    agent = SB3Agent(path, trust_checkpoint=True)
    assert (agent.size, agent.history) == (40, 2)
    result = evaluate(
        "sb3",
        checkpoint=path,
        env_kwargs=env_kwargs,
        num_episodes=3,
        out_dir=tmp_path / "eval",
        trust_checkpoint=True,
    )
    assert result.metrics["agent"] == "sb3" and result.metrics["episodes"] == 3
    assert all(0 <= a <= 3 for record in result.episodes for a in record["actions"])
    assert (tmp_path / "eval" / "metrics.json").is_file()


def test_report_pictures_a_seeded_choice_on_maps_in_metres(tmp_path):
    from agents.eval.evaluate import plotted_indices
    from vln_gym.topdown import GOAL

    assert plotted_indices(4, seed=3) == [0, 1, 2, 3]
    chosen = plotted_indices(20, seed=3)
    assert len(chosen) == 6 and chosen == sorted(chosen) and chosen == plotted_indices(20, seed=3)
    assert chosen != plotted_indices(20, seed=4)
    config = {"min_path_length": 1.0, "max_path_length": 2.0, "success_distance": 0.5}
    env_kwargs = {"world_config": config, "forward_step": 0.5, "turn_angle": 45.0, "max_steps": 20}
    result = evaluate("oracle", env_kwargs=env_kwargs, num_episodes=8, seed=3, out_dir=tmp_path / "eval")
    assert result.plotted == plotted_indices(8, seed=3) and len(result.maps) == 6
    for position, (image, (left, right, bottom, top)) in zip(result.plotted, result.maps, strict=True):
        assert right - left == pytest.approx(bottom - top)  # square panels in metres
        rows, cols = np.nonzero(np.all(image == GOAL, axis=-1))  # the goal marker's pixels
        x = left + (cols.mean() + 0.5) / image.shape[1] * (right - left)
        z = top + (rows.mean() + 0.5) / image.shape[0] * (bottom - top)
        goal = result.episodes[position]["goal_position"]
        assert math.dist((x, z), (goal[0], goal[2])) < 0.1  # the extent puts the goal where it is drawn
    text = (tmp_path / "eval" / "report.md").read_text()
    assert (
        f"6 of the 8 episodes, drawn at random with seed 3 (run order {', '.join(map(str, result.plotted))})"
        in text
    )
    assert (tmp_path / "eval" / "maps.png").is_file()


def test_cli_data_flags_reach_the_loader(tmp_path, vln_ego_sample, capsys):
    """--path-remap (and --format) as validate has them: the LLaMA-Factory export evaluates once remapped."""
    data = vln_ego_sample / "r2r_16_images_4act_debug.json"
    base = ["--agent", "expert", "--data", str(data), "--episodes", "3", "--no-plots", "--no-progress"]
    base += ["--env-kwargs", '{"image_size": [32, 32]}']
    assert main([*base, "--out", str(tmp_path / "a")]) == 2
    assert "--path-remap VLN-Ego=LOCAL_FOLDER" in capsys.readouterr().err
    remap = f"VLN-Ego/data/r2r_training_rgb={vln_ego_sample / 'rgb_images_r2r_debug'}"
    assert main([*base, "--format", "sharegpt", "--path-remap", remap, "--out", str(tmp_path / "b")]) == 0
    decision = json.loads((tmp_path / "b" / "metrics.json").read_text())["decision"]
    assert decision["decisions_with_expert"] == 3 and decision["first_action_accuracy"] == 1.0
    assert main([*base, "--dataset", "x", "--out", str(tmp_path / "c")]) == 2
    assert "--dataset-info and --dataset go together" in capsys.readouterr().err
