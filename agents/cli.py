"""`vln-gym` command line: one subcommand per module, imported only when used (torch loads lazily)."""

from __future__ import annotations

import importlib
import sys

# command -> (module, function, one-line help). Each function takes argv and returns an exit code.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": ("agents.demo", "main", "the main job: baselines, SFT + RL (GRPO) on the built-in world, report"),
    "validate": ("vln_gym.data.cli", "validate_main", "check dataset files; one line per problem"),
    "convert": ("vln_gym.data.cli", "convert_main", "write any supported input as vln-gym jsonl"),
    "make-world": ("vln_gym.world.cli", "main", "export built-in-world episodes as a dataset"),
    "train": ("agents.ppo_train", "main", "PPO/GRPO training through env.step"),
    "evaluate": ("agents.eval.evaluate", "main", "run an agent on episodes; metrics, report, plots"),
    "serve": ("vln_gym.remote.cli", "main", "serve VLN-v0 envs over the env protocol (no pickle)"),
}


def _usage() -> str:
    lines = ["usage: vln-gym COMMAND [ARGS]   (vln-gym --version)", "", "commands:"]
    lines += [f"  {name:<12} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines.append("\n`vln-gym COMMAND --help` for a command's options.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``vln-gym COMMAND ...`` to its module."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if args[0] in ("-V", "--version"):
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"vln-gym {version('vln-gym')}")
        except PackageNotFoundError:  # run from a source tree that was never installed
            print("vln-gym (not installed)")
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"vln-gym: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, function_name, _ = COMMANDS[name]
    module = importlib.import_module(module_name)
    return int(getattr(module, function_name)(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
