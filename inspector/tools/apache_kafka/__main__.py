"""``python -m inspector.tools.apache_kafka``: start Apache Kafka and keep it running."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from pathlib import Path

from inspector.tools.apache_kafka.cluster import KafkaCluster
from inspector.tools.apache_kafka.jars import KAFKA_VERSION, KafkaLaunchError, fetch_jars


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Start Apache Kafka and keep it running until Ctrl+C or SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1, choices=[1, 3])
    parser.add_argument("--workdir", type=Path, help="keep node data here (default: temporary)")
    parser.add_argument(
        "--fetch-only", action="store_true", help="fetch the jars into the cache and exit"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.fetch_only:
        try:
            libs = fetch_jars()
        except KafkaLaunchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"Apache Kafka {KAFKA_VERSION} jars: {libs}")
        return 0
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        with KafkaCluster(args.nodes, workdir=args.workdir) as cluster:
            print(cluster.bootstrap, flush=True)
            while all(node.alive() for node in cluster.nodes):
                time.sleep(1)
            print("a node exited; stopping", file=sys.stderr)
            return 1
    except KafkaLaunchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
