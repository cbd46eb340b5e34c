"""`headcraft-backend` command line."""
from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import sys
from pathlib import Path

from . import __version__

TOKEN_ENV = "HEADCRAFT_TOKEN"


def _read_token(args) -> str:
    """The token comes from the environment, stdin, or is generated and written to a 0600 file;
    it never appears on the command line or in logs."""
    token = os.environ.pop(TOKEN_ENV, "")
    if not token and args.token_stdin:
        token = sys.stdin.readline().strip()
    if not token:
        token = secrets.token_urlsafe(32)
        path = Path(args.token_file).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(token + "\n")
        print(f"token written to {path} (copy it into the add-on preferences)", flush=True)
    return token


def cmd_serve(args) -> int:
    from .service.jobs import UserError
    from .service.server import Server
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        filename=args.log_file or None)
    token = _read_token(args)
    try:
        server = Server(token, host=args.host, port=args.port, device=args.device,
                        max_payload=args.max_frame_mb << 20, parent_pid=args.parent_pid)
    except (UserError, OSError) as exc:
        print(f"headcraft-backend: cannot start: {exc}", file=sys.stderr, flush=True)
        return 2
    server.serve_forever(ready=lambda line: print(line, flush=True))
    return 0


def cmd_info(args) -> int:
    from .service.device import describe_device, resolve_device
    from .service.jobs import load_all
    info = {"backend_version": __version__, **describe_device(resolve_device(args.device)),
            "jobs": sorted(load_all())}
    print(json.dumps(info, indent=2))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="headcraft-backend", description=__doc__)
    p.add_argument("--version", action="version", version=f"headcraft-backend {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the job service the Blender extension talks to")
    s.add_argument("--host", default="127.0.0.1",
                   help="interface to listen on (default loopback; use an SSH tunnel for remote use)")
    s.add_argument("--port", type=int, default=0, help="0 picks a free port (printed when ready)")
    s.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    s.add_argument("--token-stdin", action="store_true", help="read the token from the first stdin line")
    s.add_argument("--token-file", default="~/.headcraft/backend.token",
                   help=f"where a generated token is written when {TOKEN_ENV} and --token-stdin are absent")
    s.add_argument("--parent-pid", type=int, default=None, help="exit when this process exits")
    s.add_argument("--max-frame-mb", type=int, default=1024, help="largest accepted frame payload")
    s.add_argument("--log-file", default="", help="log here instead of stderr")
    s.add_argument("--log-level", default="info")
    s.set_defaults(fn=cmd_serve)
    i = sub.add_parser("info", help="print version, device and available jobs as JSON")
    i.add_argument("--device", default="auto")
    i.set_defaults(fn=cmd_info)
    args = p.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
