"""`vln-gym validate` and `vln-gym convert`: exit 0 when clean, 1 on data problems, 2 on usage errors."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vln_gym.data.fields import FORMATS, MAPPABLE_FIELDS, LoadOptions
from vln_gym.data.loader import PathsLike, as_paths, collect_episodes, inputs_and_options
from vln_gym.data.ownjsonl import write_episodes_jsonl
from vln_gym.data.problems import DataError, ValidationReport
from vln_gym.images import (
    DEFAULT_MAX_IMAGE_PIXELS,
    MAX_PIXELS_VARIABLE,
    max_pixels_from_environment,
    set_max_image_pixels,
)
from vln_gym.safe_files import OutputExistsError, check_output


class _UsageError(Exception):
    """Bad command-line arguments (exit code 2)."""


def _pairs(values: list[str] | None, option: str) -> dict[str, str]:
    pairs = {}
    for value in values or []:
        key, sep, target = value.partition("=")
        if not sep or not key or not target:
            raise _UsageError(f"{option} expects KEY=VALUE, got {value!r}")
        pairs[key] = target
    return pairs


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="jsonl / JSON / Parquet files, VLN-Ego trajectory folders or StreamVLN annotations.json "
        "(none with --dataset-info)",
    )
    parser.add_argument("--dataset-info", metavar="FILE", help="a LLaMA-Factory dataset_info.json")
    parser.add_argument("--dataset", metavar="NAME", help="the entry of --dataset-info to read")
    parser.add_argument(
        "--format", default="auto", choices=FORMATS, help="input format (default: per-file auto)"
    )
    parser.add_argument("--media-dir", help="folder that relative image paths resolve against")
    parser.add_argument(
        "--path-remap", action="append", metavar="OLD=NEW", help="replace an image path prefix (repeatable)"
    )
    parser.add_argument(
        "--field-map",
        action="append",
        metavar="OURS=THEIRS",
        help=f"read our field from the file's column THEIRS (repeatable): {', '.join(MAPPABLE_FIELDS)}",
    )
    parser.add_argument(
        "--check-images", action="store_true", help="decode every image to catch broken files"
    )
    parser.add_argument(
        "--allow-outside-media", action="store_true", help="accept images outside the media folder"
    )
    parser.add_argument(
        "--heading-unit", default="rad", choices=("rad", "deg"), help="unit of heading fields"
    )
    parser.add_argument(
        "--forward-step", type=float, default=0.25, help="metres per MOVE_FORWARD (VLN-Ego poses)"
    )
    parser.add_argument("--turn-angle", type=float, default=15.0, help="degrees per turn (VLN-Ego poses)")
    parser.add_argument(
        "--pose-source",
        action="append",
        metavar="FILE",
        help="Habitat VLN-CE episode file (split.json.gz, its _gt beside it) giving frame trajectories their "
        "poses by episode id (repeatable)",
    )
    parser.add_argument("--no-require-pose", action="store_true", help="accept records without pose fields")
    parser.add_argument(
        "--max-image-pixels",
        type=int,
        default=None,
        help=f"refuse images larger than this many pixels (default: {MAX_PIXELS_VARIABLE} if set, else "
        f"{DEFAULT_MAX_IMAGE_PIXELS:,})",
    )
    return parser


def _parse(
    parser: argparse.ArgumentParser, argv: list[str]
) -> tuple[argparse.Namespace, PathsLike, LoadOptions] | int:
    """Parsed arguments, inputs and load options, or an exit code (0 for --help, 2 for usage errors,
    1 for a broken dataset_info entry)."""
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        options = {
            "format": args.format,
            "media_dir": args.media_dir,
            "path_remap": _pairs(args.path_remap, "--path-remap"),
            "field_map": _pairs(args.field_map, "--field-map"),
            "check_images": args.check_images,
            "allow_outside_media": args.allow_outside_media,
            "heading_unit": args.heading_unit,
            "forward_step": args.forward_step,
            "turn_angle": args.turn_angle,
            "require_pose": not args.no_require_pose,
            "pose_source": args.pose_source,
        }
        given = args.max_image_pixels
        set_max_image_pixels(max_pixels_from_environment() if given is None else given)
        # Option values are checked here, before any data file is read.
        paths, load_options = inputs_and_options(
            args.paths or None, args.dataset_info, args.dataset, **options
        )
    except DataError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 1
    except (_UsageError, ValueError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    return args, paths, load_options


def _collected(prog: str, paths: PathsLike, options: LoadOptions) -> tuple[list, ValidationReport] | None:
    """`collect_episodes`, or ``None`` once the problems of a pose source that cannot be read (which fails
    the whole load) are printed."""
    try:
        return collect_episodes(paths, options)
    except DataError as error:
        for problem in error.problems:
            print(problem)
        print(f"{prog}: error: the pose source cannot be read; no record was read", file=sys.stderr)
        return None


def validate_main(argv: list[str]) -> int:
    """``vln-gym validate PATH...``: one line per problem, then a summary; exit 0 clean, 1 otherwise."""
    parsed = _parse(_parser("vln-gym validate", "Check VLN dataset files; one line per problem."), argv)
    if isinstance(parsed, int):
        return parsed
    _, paths, options = parsed
    collected = _collected("vln-gym validate", paths, options)
    if collected is None:
        return 1
    report = collected[1]
    for problem in report.problems:
        print(problem)
    print(report.summary())
    return 0 if report.ok else 1


def convert_main(argv: list[str]) -> int:
    """``vln-gym convert INPUT... --out FILE``: write vln-gym jsonl; exit 1 (nothing written) on problems
    unless ``--on-error skip``, which writes the good records and reports the skipped ones on stderr."""
    parser = _parser("vln-gym convert", "Write any supported input as vln-gym jsonl.")
    parser.add_argument("--out", required=True, help="output .jsonl file")
    parser.add_argument(
        "--out-media-dir",
        help="write image paths relative to this folder (default: the output file's folder)",
    )
    parser.add_argument(
        "--on-error", default="raise", choices=("raise", "skip"), help="bad records: stop or skip"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace --out if it exists (never an input)"
    )
    parsed = _parse(parser, argv)
    if isinstance(parsed, int):
        return parsed
    args, paths, options = parsed
    try:
        check_output(args.out, overwrite=args.overwrite, inputs=as_paths(paths))
        if Path(args.out).is_dir():
            raise OutputExistsError(f"{args.out}: is a folder; --out names the jsonl file to write")
    except OutputExistsError as error:
        print(f"vln-gym convert: error: {error}", file=sys.stderr)
        return 2
    collected = _collected("vln-gym convert", paths, options)
    if collected is None:
        return 1
    episodes, report = collected
    if report.problems and args.on_error == "raise":
        for problem in report.problems:
            print(problem)
        print(f"{report.summary()}; nothing written (--on-error skip keeps the good records)")
        return 1
    if report.problems:
        print(f"{report.skipped()}:", file=sys.stderr)
        for problem in report.problems:
            print(f"  {problem}", file=sys.stderr)
    if not episodes:
        print(f"vln-gym convert: no good records to write; {args.out} not written", file=sys.stderr)
        return 1
    out = Path(args.out)
    media_dir = args.out_media_dir or out.absolute().parent
    try:
        write_episodes_jsonl(episodes, out, media_dir=media_dir)
    except (OSError, ValueError) as error:
        print(f"vln-gym convert: cannot write {out}: {error}", file=sys.stderr)
        return 1
    print(f"wrote {len(episodes)} episodes to {out}")
    return 0
