"""`hrm-eval convert KIND …`: raw data → puzzle datasets.

Each KIND's input format, encoding and options are described by the docstring of the module
that converts it (shown as `hrm-eval convert KIND --help`); this module holds the command
line of each and prints the summary the converter returns (also written into dataset.json).
"""

from __future__ import annotations

import argparse
import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from hrm.data.schema import DEFAULT_SHARD_BYTES, FORMATS
from hrm.puzzles.arc import DEFAULT_TEST_SUBSETS
from hrm.puzzles.publish import Destination, Sources
from hrm.puzzles.sudoku import DEFAULT_TIERS


@dataclass(frozen=True)
class Kind:
    module: str  # whose docstring is the help text
    configure: Callable[[argparse.ArgumentParser], None]
    convert: Callable[[argparse.Namespace, ModuleType], dict]


# --------------------------------------------------------------------------- shared options


def add_output_options(parser: argparse.ArgumentParser, default_seed: int = 0) -> None:
    """--output, --format and --seed, the same for every converter of raw data."""
    group = parser.add_argument_group("output")
    group.add_argument("--output", required=True, metavar="URI",
                       help="dataset destination: a local directory, file://… or s3://bucket/prefix")
    group.add_argument("--format", choices=FORMATS, default="parquet",
                       help="our Parquet shards (default) or the reference numpy layout")
    group.add_argument("--seed", type=int, default=default_seed,
                       help=f"seed for every random choice; the same seed gives the same dataset "
                            f"(default {default_seed})")


def add_split_options(parser: argparse.ArgumentParser, what: str) -> None:
    """--train / --test files, or one --input file split by --test-fraction."""
    group = parser.add_argument_group("input splits")
    group.add_argument("--train", type=Path, metavar="FILE", help=f"{what} for the train split")
    group.add_argument("--test", type=Path, metavar="FILE", help=f"{what} for the test split")
    group.add_argument("--input", type=Path, metavar="FILE",
                       help=f"{what} to split into train and test by --test-fraction "
                            "(instead of --train/--test)")
    group.add_argument("--test-fraction", type=float, default=1.0, metavar="F",
                       help="with --input: the fraction of records that goes to the test split, "
                            "drawn with --seed (default 1.0: all of it, for evaluation)")


def sources(args: argparse.Namespace) -> Sources:
    return Sources(train=args.train, test=args.test, input=args.input, test_fraction=args.test_fraction)


def destination(args: argparse.Namespace) -> Destination:
    return Destination(uri=args.output, format=args.format)


# --------------------------------------------------------------------------- the kinds


def configure_sudoku(parser: argparse.ArgumentParser) -> None:
    add_split_options(parser, "Sudoku CSV")
    parser.add_argument("--augment", type=int, default=0, metavar="N",
                        help="N shuffled copies of every train puzzle (9x9 only; default 0)")
    parser.add_argument("--tiers", default=DEFAULT_TIERS, metavar="EDGES",
                        help="increasing rating edges; tier k holds ratings in [edge k, edge k+1), "
                             f"the last tier is open-ended (default {DEFAULT_TIERS})")
    parser.add_argument("--subsample", type=int, metavar="N",
                        help="keep a seeded random N puzzles of each split (before augmentation)")
    add_output_options(parser)


def convert_sudoku(args: argparse.Namespace, module: ModuleType) -> dict:
    return module.convert_sudoku_csv(sources(args), destination(args), seed=args.seed, augment=args.augment,
                                     tiers=args.tiers, keep=args.subsample)


def configure_arc(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sources", nargs="+", metavar="SOURCE",
                        help="a kaggle-combined file prefix or a directory of puzzle JSON files")
    parser.add_argument("--subsets", metavar="NAMES",
                        help="comma-separated subsets to read from kaggle-combined prefixes (default: all found)")
    parser.add_argument("--test-subsets", default=DEFAULT_TEST_SUBSETS, metavar="NAMES",
                        help="subsets whose test pairs form the test split "
                             f"(default {DEFAULT_TEST_SUBSETS})")
    parser.add_argument("--augment", type=int, default=0, metavar="N",
                        help="augmented versions per puzzle: dihedral x colour permutation (default 0)")
    parser.add_argument("--id-style", choices=("trm", "hrm"), default="trm",
                        help="identifier convention: name|||t<k>|||<perm> (trm) or name_t<k>_<perm> (hrm)")
    parser.add_argument("--no-translate", action="store_true",
                        help="keep every train pair at the top-left of its canvas")
    add_output_options(parser, default_seed=42)


def convert_arc(args: argparse.Namespace, module: ModuleType) -> dict:
    return module.convert_arc(args.sources, destination(args), seed=args.seed, subsets=args.subsets,
                              test_subsets=args.test_subsets, augment=args.augment, id_style=args.id_style,
                              translate=not args.no_translate)


def configure_maze(parser: argparse.ArgumentParser) -> None:
    add_split_options(parser, "maze text or CSV file")
    parser.add_argument("--augment", action="store_true",
                        help="add the 7 other dihedral transforms of every train maze to its group")
    add_output_options(parser)


def convert_maze(args: argparse.Namespace, module: ModuleType) -> dict:
    return module.convert_mazes(sources(args), destination(args), seed=args.seed, augment=args.augment)


def configure_jsonl(parser: argparse.ArgumentParser) -> None:
    add_split_options(parser, "JSONL file")
    parser.add_argument("--tokenizer", required=True, metavar="bytes|FILE",
                        help="'bytes' (lossless), a Hugging Face tokenizers JSON file (lossless only if every "
                             "record round-trips through it), or a keyword vocabulary file (lossy)")
    parser.add_argument("--allow-lossy", action="store_true",
                        help="accept a keyword vocabulary, which drops words it has no token for, or a Hugging Face "
                             "tokenizer that some record does not round-trip through")
    parser.add_argument("--seq-len", type=int, metavar="N",
                        help="sequence length (default: the longest prompt or completion + eos)")
    parser.add_argument("--truncate", action="store_true",
                        help="cut sequences longer than --seq-len instead of refusing them")
    parser.add_argument("--prompt-key", default="prompt", help="field holding the prompt (default prompt)")
    parser.add_argument("--completion-key", default="completion",
                        help="field holding the completion (default completion)")
    parser.add_argument("--tier-key", default="difficulty",
                        help="field holding the difficulty tier (default difficulty)")
    add_output_options(parser)


def convert_jsonl(args: argparse.Namespace, module: ModuleType) -> dict:
    fields = module.TextFields(prompt=args.prompt_key, completion=args.completion_key, tier=args.tier_key)
    return module.convert_jsonl(sources(args), destination(args), tokenizer=args.tokenizer, seed=args.seed,
                                allow_lossy=args.allow_lossy, seq_len=args.seq_len, truncate=args.truncate,
                                fields=fields)


def configure_reference(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="dataset to read, in either layout (path, file:// or s3://)")
    parser.add_argument("output", help="where to write the converted dataset (path, file:// or s3://)")
    parser.add_argument("--to", choices=FORMATS, default=None,
                        help="output layout (default: the other layout than the input's)")
    parser.add_argument("--shard-mb", type=float, default=DEFAULT_SHARD_BYTES / 2**20,
                        help="target uncompressed size of one Parquet part in MiB (default: %(default)g)")


def convert_reference(args: argparse.Namespace, module: ModuleType) -> dict:
    return module.convert_layout(args.input, args.output, args.to, int(args.shard_mb * 2**20))


KINDS: dict[str, Kind] = {
    "sudoku-csv": Kind("hrm.puzzles.sudoku", configure_sudoku, convert_sudoku),
    "arc": Kind("hrm.puzzles.arc", configure_arc, convert_arc),
    "maze": Kind("hrm.puzzles.maze", configure_maze, convert_maze),
    "jsonl": Kind("hrm.puzzles.text", configure_jsonl, convert_jsonl),
    "reference": Kind("hrm.data.convert", configure_reference, convert_reference),
}


# --------------------------------------------------------------------------- the command


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Convert raw data into a puzzle dataset (our Parquet layout or the reference numpy "
        "layout), locally or on s3://. Run `hrm-eval convert KIND --help` for each kind."
    )
    sub = parser.add_subparsers(dest="kind", metavar="KIND", required=True)
    for name, kind in KINDS.items():
        doc = importlib.import_module(kind.module).__doc__ or ""
        kind_parser = sub.add_parser(name, help=doc.strip().splitlines()[0], description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
        kind.configure(kind_parser)
        kind_parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def run(args: argparse.Namespace) -> int:
    kind = KINDS[args.kind]
    summary = kind.convert(args, importlib.import_module(kind.module))
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    else:
        width = max(len(k) for k in summary)
        for key, value in summary.items():
            print(f"{key:<{width}}  {value}")
    return 0
