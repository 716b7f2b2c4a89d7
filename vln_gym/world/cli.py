"""``vln-gym make-world``: export built-in-world episodes as a jsonl dataset with rendered images."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vln_gym.arguments import real_number
from vln_gym.safe_files import OutputExistsError, check_output, check_replaceable
from vln_gym.world.config import MAX_LANDMARKS, MAX_ROOMS, MIN_FORWARD_STEP, WorldConfig


def _parser() -> argparse.ArgumentParser:
    defaults = WorldConfig()
    parser = argparse.ArgumentParser(
        prog="vln-gym make-world",
        description="Write N built-in-world episodes as OUT/episodes.jsonl plus OUT/images/.",
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--episodes", type=int, default=100, help="number of episodes (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="episode-set seed, >= 0 (default 0)")
    parser.add_argument(
        "--per-step", action="store_true", help="one record per expert step instead of per episode"
    )
    parser.add_argument("--size", type=int, default=224, help="square image side in pixels (default 224)")
    parser.add_argument(
        "--format", choices=("jpg", "png"), default="jpg", help="image file format (default jpg)"
    )
    parser.add_argument("--history", type=int, default=8, help="frames per per-step record (default 8)")
    parser.add_argument("--rooms", type=int, default=defaults.rooms, help=f"rooms per world, 1..{MAX_ROOMS}")
    parser.add_argument(
        "--landmarks", type=int, default=defaults.landmarks, help=f"landmarks per world, 0..{MAX_LANDMARKS}"
    )
    parser.add_argument(
        "--forward-step", type=float, default=0.25, help="metres per MOVE_FORWARD (default 0.25)"
    )
    parser.add_argument("--turn-angle", type=float, default=15.0, help="degrees per turn (default 15)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier make-world dataset in --out (only its episodes.jsonl and images/)",
    )
    return parser


def check_own_folder(out: Path) -> None:
    """``--overwrite`` replaces only an earlier make-world dataset: a folder holding just its jsonl and
    images, and never the current folder or one above it (the swap would pull it from under the shell)."""
    from vln_gym.world.export import JSONL_NAME

    here = Path.cwd().resolve()
    if out.is_dir() and (out.resolve() == here or out.resolve() in here.parents):
        raise OutputExistsError(f"{out}: is the current folder (or holds it); write the dataset elsewhere")
    check_replaceable(out, {JSONL_NAME, "images"}, "make-world")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns 0 on success, 2 on bad arguments."""
    args = _parser().parse_args(argv)
    from vln_gym.world.export import export_dataset

    try:
        if args.episodes < 1 or args.size < 8:
            raise ValueError("--episodes must be >= 1 and --size >= 8")
        real_number("--forward-step", args.forward_step, low=MIN_FORWARD_STEP)
        real_number("--turn-angle", args.turn_angle, low=0.0, high=180.0, low_open=True)
        config = WorldConfig(rooms=args.rooms, landmarks=args.landmarks)
        check_output(args.out, overwrite=args.overwrite)
        if args.overwrite:
            check_own_folder(Path(args.out))
        path = export_dataset(
            args.out,
            args.episodes,
            args.seed,
            per_step=args.per_step,
            image_format=args.format,
            size=(args.size, args.size),
            config=config,
            history=args.history,
            forward_step=args.forward_step,
            turn_angle=args.turn_angle,
            replace=args.overwrite,
        )
    except (ValueError, RuntimeError) as error:  # RuntimeError: no episode fits these settings
        print(f"vln-gym make-world: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"vln-gym make-world: {error.filename or args.out}: {error.strerror or error}", file=sys.stderr)
        return 2
    with open(path, encoding="utf-8") as handle:
        count = sum(1 for _ in handle)
    print(f"wrote {count} records to {path}")
    return 0
