"""`crossfade` command line: run | simulate | demo | drill | status."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

GROUP = "crossfade.dev"
VERSION = "v1alpha1"
PLURAL = "inferencepools"


def _delegate(module: str, argv: Sequence[str]) -> int:
    """Call ``module.main(argv)``; imported lazily so `run` never loads the simulator."""
    main: Callable[[list[str]], int] = importlib.import_module(module).main
    return int(main(list(argv)) or 0)


# The synchronous Kubernetes client, which only `crossfade status` uses. kopf imports it at
# start-up when it is installed, only to recognise its model objects (the operator never
# hands kopf one, and logs in through kubernetes_asyncio: handlers/process.py).
SYNC_KUBERNETES_CLIENT = "kubernetes"


def keep_sync_kubernetes_client_out() -> None:
    """Make ``import kubernetes`` fail in this process, unless something already loaded it.

    A None entry in ``sys.modules`` makes an import raise ImportError, which kopf handles
    as "not installed". Saves ~15 MiB of RSS in `crossfade run` (bench/results/memory.md).
    """
    sys.modules.setdefault(SYNC_KUBERNETES_CLIENT, None)  # type: ignore[arg-type]


def _cmd_run(args: argparse.Namespace) -> int:
    keep_sync_kubernetes_client_out()
    from crossfade.handlers.lazy_kube_client import load_lazily

    load_lazily()  # before kopf or anything else imports kubernetes_asyncio.client
    from crossfade.handlers.process import RunConfig, run_operator
    from crossfade.handlers.tls_buffers import shrink_tls_read_buffers
    from crossfade.logging import configure_logging

    shrink_tls_read_buffers()

    configure_logging(level=logging.DEBUG if args.verbose else logging.INFO)
    config = RunConfig(
        namespaces=tuple(args.namespace or ()),
        health_host=args.health_host,
        health_port=args.health_port,
        lease_namespace=args.lease_namespace,
        lease_name=args.lease_name,
        identity=args.identity or "",
        leader_election=not args.no_leader_election,
        period_override_s=args.period,
        reaper_interval_s=args.reaper_interval_seconds,
        reaper_grace_period_s=args.reaper_grace_period_seconds,
    )
    return asyncio.run(run_operator(config))


def _custom_api() -> Any:
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CustomObjectsApi()


def _cmd_status(args: argparse.Namespace) -> int:
    from crossfade.handlers.status_view import format_pools

    api = _custom_api()
    if args.pool:
        pools = [
            api.get_namespaced_custom_object(GROUP, VERSION, args.namespace, PLURAL, args.pool)
        ]
    elif args.all_namespaces:
        pools = api.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
    else:
        pools = api.list_namespaced_custom_object(GROUP, VERSION, args.namespace, PLURAL)["items"]
    print(format_pools(pools))
    return 0


def parse_duration_s(text: str) -> float:
    """Return seconds for ``90``, ``90s``, ``10m`` or ``1h``; raise ArgumentTypeError."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    raw = text.strip().lower()
    scale = units.get(raw[-1:])
    number = raw[:-1] if scale is not None else raw
    try:
        seconds = float(number) * (scale or 1.0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use 90s, 10m, 1h)") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"duration must be positive: {text!r}")
    return seconds


def _cmd_drill(args: argparse.Namespace) -> int:
    """Run a reversible failover drill through the manual-control annotations."""
    from crossfade.handlers.drill import DrillRequest, DrillRunner

    api = _custom_api()

    def read_pool() -> dict[str, Any]:
        pool: dict[str, Any] = api.get_namespaced_custom_object(
            GROUP, VERSION, args.namespace, PLURAL, args.pool
        )
        return pool

    def annotate(annotations: Mapping[str, str | None]) -> None:
        api.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            args.namespace,
            PLURAL,
            args.pool,
            {"metadata": {"annotations": dict(annotations)}},
        )

    runner = DrillRunner(
        read_pool=read_pool, annotate=annotate, clock=time.monotonic, sleep=time.sleep, say=print
    )
    request = DrillRequest(
        target=args.to,
        duration_s=args.duration,
        dry_run=args.dry_run,
        shift_timeout_s=args.timeout,
        error_budget_polls=args.error_budget,
    )
    report = runner.run(request)
    print(f"drill: {report.outcome}")
    return 0 if report.succeeded else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crossfade", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the operator")
    run.add_argument("-n", "--namespace", action="append", help="watch only these namespaces")
    run.add_argument("--health-host", default="0.0.0.0")  # noqa: S104
    run.add_argument("--health-port", type=int, default=8080)
    run.add_argument("--lease-namespace", default="default")
    run.add_argument("--lease-name", default="crossfade-leader")
    run.add_argument("--identity", default=None, help="replica identity (default: POD_NAME)")
    run.add_argument("--no-leader-election", action="store_true")
    run.add_argument("--period", type=float, default=None, help="override every pool's period")
    run.add_argument(
        "--reaper-interval-seconds",
        type=float,
        default=600.0,
        help="seconds between orphan node group sweeps (one per cloud cluster); 0 = off",
    )
    run.add_argument(
        "--reaper-grace-period-seconds",
        type=float,
        default=3600.0,
        help="how long an orphan whose recorded deletionPolicy is Delete waits before deletion",
    )
    run.add_argument("-v", "--verbose", action="store_true")
    run.set_defaults(handler=_cmd_run)

    status = sub.add_parser("status", help="print a summary of InferencePools")
    status.add_argument("pool", nargs="?")
    status.add_argument("-n", "--namespace", default="default")
    status.add_argument("-A", "--all-namespaces", action="store_true")
    status.set_defaults(handler=_cmd_status)

    drill = sub.add_parser("drill", help="a reversible failover drill with safety rails")
    drill.add_argument("pool")
    drill.add_argument("--to", required=True, help="placement to fail over to")
    drill.add_argument("-n", "--namespace", default="default")
    drill.add_argument("--duration", type=parse_duration_s, default=600.0, help="e.g. 10m")
    drill.add_argument("--dry-run", action="store_true", help="print the steps, change nothing")
    drill.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for shift")
    drill.add_argument(
        "--error-budget", type=int, default=2, help="unhealthy polls before rolling back"
    )
    drill.set_defaults(handler=_cmd_drill)

    for name, module in (("simulate", "crossfade.simulation_report"), ("demo", "crossfade.demo")):
        delegated = sub.add_parser(name, help=f"see `crossfade {name} --help`", add_help=False)
        delegated.set_defaults(delegate=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `crossfade` script."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] in ("simulate", "demo"):
        module = "crossfade.simulation_report" if args_list[0] == "simulate" else "crossfade.demo"
        return _delegate(module, args_list[1:])
    args = build_parser().parse_args(args_list)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
