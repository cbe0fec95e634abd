"""``fhir-server synth``: generate a synthetic multi-agency dataset.

``main(argv)`` parses the arguments and runs the generator; ``add_arguments(parser)`` and
``run(args)`` let the ``fhir-server`` command register ``synth`` as one of its subcommands.
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Sequence
from pathlib import Path

from .config import SynthConfig
from .generator import OutputNotEmpty, generate


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--families", type=_positive, default=200, help="number of families (default 200; "
                        "about 2.05 children each)")
    parser.add_argument("--seed", type=int, default=1, help="random seed: the same seed gives the same files")
    parser.add_argument("--out", type=Path, required=True, help="output directory (created; must be empty "
                        "unless --force)")
    parser.add_argument("--start-date", type=_date, default=dt.date(2022, 4, 1),
                        help="first month of the simulated period (default 2022-04-01)")
    parser.add_argument("--months", type=_positive, default=36, help="length of the period in months (default 36)")
    parser.add_argument("--force", action="store_true", help="replace a dataset previously generated in --out")
    parser.add_argument("--no-counterfactual", action="store_true",
                        help="skip the no-effect re-run of treated families (outcomes.csv cf_* = factual)")
    parser.add_argument("--quiet", action="store_true", help="no progress display")


def run(args: argparse.Namespace) -> int:
    try:
        cfg = SynthConfig(families=args.families, seed=args.seed, start_date=args.start_date, months=args.months,
                          counterfactual=not args.no_counterfactual)
    except ValueError as exc:
        print(f"fhir-server synth: {exc}", file=sys.stderr)
        return 2
    try:
        summary = generate(cfg, args.out, progress=not args.quiet, overwrite=args.force)
    except OutputNotEmpty as exc:
        print(f"fhir-server synth: {exc}", file=sys.stderr)
        return 1
    print(f"{summary.line()}\nmanifest: {args.out / 'manifest.json'}\nground truth: {args.out / 'ground_truth'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fhir-server synth", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
