"""fakeredis's TCP server, for machines without a redis-server binary (demo fallback)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from fakeredis import TcpFakeServer


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devtools.fake_redis")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    server = TcpFakeServer(("127.0.0.1", args.port))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
