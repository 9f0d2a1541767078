"""Child process for the fleet benchmarks: several fake inference servers in one event loop.

``python -m bench.fleet_servers COUNT`` starts COUNT ``FakeInferenceServer`` instances on
free loopback ports, prints one JSON line ``{"urls": [...]}`` and serves until SIGTERM. Every
server answers any path prefix, so one server stands in for the endpoints of many pools
(``http://127.0.0.1:PORT/pool-0042/aws``); its admin endpoint flips all of them at once.
Request logs are reset every minute so an hour-long soak does not grow this process.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

from crossfade.testing.inference_server import FakeInferenceServer, RequestLog

LOG_RESET_S = 60.0


async def serve(count: int) -> None:
    servers = [FakeInferenceServer() for _ in range(count)]
    for server in servers:
        await server.start()
    print(json.dumps({"urls": [server.base_url for server in servers]}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=LOG_RESET_S)
        except TimeoutError:
            for server in servers:
                server.requests = RequestLog()
    for server in servers:
        await server.stop()


def main(argv: list[str]) -> int:
    asyncio.run(serve(int(argv[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
