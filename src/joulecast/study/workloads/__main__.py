"""``python -m joulecast.study.workloads``: train one workload, measured (or joining a run)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from joulecast.errors import JoulecastError
from joulecast.study.workloads.train import add_arguments, config_from_args, train


def main(argv: Sequence[str] | None = None) -> int:
    """Parse options, train, print the test metrics; exit 2 on bad input."""
    parser = argparse.ArgumentParser(
        prog="python -m joulecast.study.workloads",
        description="Train one of the paper's workloads by transfer learning, measured.",
    )
    add_arguments(parser)
    parser.add_argument("--store", help="run store (default $JOULECAST_STORE or ./joulecast.db)")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="joulecast: %(levelname)s: %(message)s",
    )
    try:
        result = train(config_from_args(args), store=args.store)
    except JoulecastError as exc:
        print(f"joulecast: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_dict()["test_metrics"] | {"run_id": result.run_id}))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
