"""`llm-attrib eval`: run the evaluation suite (`llm_attrib.evaluation.suite`) and rewrite its results table."""

from __future__ import annotations

import argparse
from pathlib import Path

from llm_attrib.distributed import require_one_process
from llm_attrib.evaluation.suite import SuiteConfig, run_suite


def _names(text: str) -> tuple[str, ...]:
    return tuple(name for name in text.split(",") if name)


def configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the suite's flags to ``parser``; ``parser.set_defaults(func=...)`` runs it."""
    defaults = SuiteConfig(data_dir=Path(), out_dir=Path(), cache_dir=Path())
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"),
                        help="folder with gpteacher_roleplay.json and tinyshakespeare.txt")
    parser.add_argument("--out-dir", type=Path, default=Path("eval"), help="where README.md and results/ are written")
    parser.add_argument("--cache-dir", type=Path, default=Path("eval/_runs"), help="ground-truth and demo-model caches")
    parser.add_argument("--n-train", type=int, default=defaults.n_train, help="role-play training records")
    parser.add_argument("--n-query", type=int, default=defaults.n_query, help="role-play held-out queries")
    parser.add_argument("--n-subsets", type=int, default=defaults.n_subsets, help="role-play LDS subsets (M)")
    parser.add_argument("--alpha", type=float, default=defaults.alpha, help="LDS subset fraction")
    parser.add_argument("--seeds-per-subset", type=int, default=defaults.seeds_per_subset,
                        help="models trained per LDS subset (outcomes averaged)")
    parser.add_argument("--facts-subsets", type=int, default=defaults.facts_subsets,
                        help="LDS subsets on the fact corpus (0 = skip; each costs a full retraining)")
    parser.add_argument("--loo-train", type=int, default=defaults.loo_train, help="training records of the LOO model")
    parser.add_argument("--loo-removed", type=int, default=defaults.loo_removed,
                        help="examples left out one at a time (0 = skip the LOO ground truth)")
    parser.add_argument("--loo-seeds", type=int, default=defaults.loo_seeds,
                        help="models per LOO trial, paired across trials (seed noise cancels)")
    parser.add_argument("--mislabel-train", type=int, default=defaults.mislabel_train,
                        help="training records of the mislabel-detection model")
    parser.add_argument("--mislabel-fraction", type=float, default=defaults.mislabel_fraction,
                        help="fraction of training completions swapped")
    parser.add_argument("--threads", type=int, default=defaults.threads,
                        help="torch intra-op threads (0 = leave torch's default; 1 is fastest for these tiny models)")
    parser.add_argument("--methods", type=_names, default=(), help="comma-separated method names (default: all)")
    parser.add_argument("--peers", type=_names, default=defaults.peers, help="comma-separated peer modules")
    parser.add_argument("--benchmarks", type=_names, default=defaults.benchmarks, help="comma-separated benchmarks")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    require_one_process("the suite trains and scores its small models in one process and rewrites one results table")
    run_suite(SuiteConfig(
        data_dir=args.data_dir, out_dir=args.out_dir, cache_dir=args.cache_dir, n_train=args.n_train,
        n_query=args.n_query, n_subsets=args.n_subsets, alpha=args.alpha, seeds_per_subset=args.seeds_per_subset,
        facts_subsets=args.facts_subsets, methods=args.methods, peers=args.peers, benchmarks=args.benchmarks,
        seed=args.seed, loo_train=args.loo_train, loo_removed=args.loo_removed, loo_seeds=args.loo_seeds,
        mislabel_train=args.mislabel_train, mislabel_fraction=args.mislabel_fraction, threads=args.threads,
    ))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    configure(subparsers.add_parser("eval", help=__doc__.splitlines()[0], description=__doc__))
