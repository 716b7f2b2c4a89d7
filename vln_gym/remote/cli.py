"""`vln-gym serve`: our own env (world, dataset or trajectory mode) for trainers, over the env protocol."""

from __future__ import annotations

import argparse
import json
import os
import sys
from functools import partial

from vln_gym.remote.envserver import serve
from vln_gym.remote.local import VLNBackend


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vln-gym serve",
        description="Serve VLN-v0 envs: every connection gets its own env, built from --env-kwargs. "
        "Clients: gym.make('VLN-v0', server='HOST:PORT').",
    )
    p.add_argument("--port", type=int, default=5555, help="TCP port (0: any free port; printed once bound)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (beyond loopback needs --token)")
    p.add_argument("--env-kwargs", default="{}", help="VLNEnv arguments as a JSON object")
    p.add_argument("--token", default=None, help="token clients must present (default: $VLN_GYM_TOKEN)")
    p.add_argument(
        "--threads", action="store_true", help="a thread per connection (default: a process per connection)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        env_kwargs = json.loads(args.env_kwargs)
    except json.JSONDecodeError as error:
        print(f"vln-gym serve: --env-kwargs is not valid JSON ({error})", file=sys.stderr)
        return 2
    if not isinstance(env_kwargs, dict):
        print("vln-gym serve: --env-kwargs must be a JSON object", file=sys.stderr)
        return 2
    if not 0 <= args.port <= 65535:
        print(f"vln-gym serve: --port must be in 0..65535, got {args.port}", file=sys.stderr)
        return 2
    token = args.token or os.environ.get("VLN_GYM_TOKEN") or None
    try:
        VLNBackend(env_kwargs).close()  # fail here, once, on arguments no env can be built from
        serve(partial(VLNBackend, env_kwargs), args.host, args.port, token, processes=not args.threads)
    except (ValueError, TypeError, OSError) as error:
        print(f"vln-gym serve: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
