"""Training: config, the episode runner, batch building, the update, the run log, PPO math, SFT and
checkpoints."""
