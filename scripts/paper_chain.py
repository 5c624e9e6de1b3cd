"""What scripts/reproduce_paper.sh asks before its steps.

    python scripts/paper_chain.py check-data VAR=DIR ... < commands
        Build every dataset split that the evaluation commands on stdin (dry-run lines of
        ood_det_*.sh and train_lp_*.sh) read, with the readers of data/natural.py, and open its
        first image: a folder lacking what belongs there is one line ``missing: VAR=DIR: ...``
        per problem (VAR: the variable whose folder holds that dataset), exit 2 if any.
    python scripts/paper_chain.py current RESULT CKPT MODEL
        Exit 0 when the result file RESULT (an evaluator's .json) was made from the checkpoint
        CKPT for the model MODEL: the SHA-256 it records under ``checkpoints`` equals CKPT's. A
        result file from before that record is current when its ``config.ckpt`` names CKPT and it
        is newer than CKPT. Exit 1 otherwise (the step runs again).

``current`` imports only the standard library (it runs before every evaluation step);
``check-data`` imports the dataset readers (and so torch).
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# the flags of the evaluation commands that name datasets, and the splits each is read in
SPEC_FLAGS = {"--ood": ("test",), "--transfer": ("train", "test")}
SPLIT_FLAGS = {"--ood": "--ood_splits", "--transfer": "--test_splits"}


def flag_values(argv: list[str], flag: str) -> list[str]:
    """The values of the last ``flag`` in ``argv`` (those up to the next ``--`` flag)."""
    values: list[str] | None = None
    for i, arg in enumerate(argv):
        if arg == flag:
            values = []
            for value in argv[i + 1:]:
                if value.startswith("--"):
                    break
                values.append(value)
    return values or []


def dataset_reads(argv: list[str]) -> list[tuple[object, str]]:
    """(DatasetSpec, split) of every dataset split the evaluation command ``argv`` reads: the ID set's
    train and test splits, each OOD set's test split and each transfer set's train and test splits
    (``--ood_splits`` / ``--test_splits`` choose another test split)."""
    from data import DatasetSpec, parse_spec

    reads = []
    root = flag_values(argv, "--data")
    for text in flag_values(argv, "--dataset"):
        spec = parse_spec(text)
        if root and "root" not in spec.options:
            spec = DatasetSpec(spec.label, spec.name, {**spec.options, "root": root[0]})
        reads += [(spec, "train"), (spec, "test")]
    for flag, splits in SPEC_FLAGS.items():
        chosen = dict(entry.split("=", 1) for entry in flag_values(argv, SPLIT_FLAGS[flag]) if "=" in entry)
        for spec in map(parse_spec, flag_values(argv, flag)):
            reads += [(spec, chosen.get(spec.label, "test") if split == "test" else split) for split in splits]
    return reads


def folder_var(root: str, folders: dict[str, str]) -> str:
    """``VAR=DIR`` of the folder variable whose folder is ``root`` (else ``root``)."""
    for var, folder in folders.items():
        if os.path.realpath(root) == os.path.realpath(folder):
            return f"{var}={folder}"
    return root


def check_split(spec, split: str) -> list[str]:
    """Build ``spec``'s ``split`` and open its first image; the warnings it gave (a DatasetError if it cannot)."""
    from data import DatasetError, build_dataset

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = build_dataset(**spec.kwargs(image_size=32, seed=0), split=split)
        if len(dataset) == 0:
            raise DatasetError(f"{spec.name}: its {split} split holds no images")
        dataset[0]
    return list(dict.fromkeys(str(w.message) for w in caught))


def check_data(folders: dict[str, str], commands: str) -> int:
    """The ``check-data`` command (module doc); returns the exit code."""
    from data import DatasetError

    problems, seen = [], set()
    for line in commands.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        for spec, split in dataset_reads(shlex.split(line)):
            key = (spec.name, tuple(sorted(spec.options.items())), split)
            if key in seen:
                continue
            seen.add(key)
            try:
                for message in check_split(spec, split):
                    print(f"warning: {message}", file=sys.stderr)
            except (DatasetError, ValueError) as error:
                problems.append(f"missing: {folder_var(str(spec.options.get('root', '')), folders)}: {error}")
    for problem in dict.fromkeys(problems):
        print(problem, file=sys.stderr)
    return 2 if problems else 0


def is_current(result: str | Path, ckpt: str | Path, model: str) -> bool:
    """The ``current`` command (module doc)."""
    result, ckpt = Path(result), Path(ckpt)
    if not result.is_file() or not ckpt.is_file():
        return False
    try:
        content = json.loads(result.read_text())
    except (OSError, ValueError):
        return False
    recorded = (content.get("checkpoints") or {}).get(model)
    if recorded is not None:
        with open(ckpt, "rb") as f:
            return recorded.get("sha256") == hashlib.file_digest(f, "sha256").hexdigest()
    named = (content.get("config") or {}).get("ckpt") or []
    return (any(Path(p).resolve() == ckpt.resolve() for p in named)
            and result.stat().st_mtime >= ckpt.stat().st_mtime)


USAGE = __doc__.split("\n\n")[1]


def main(argv: list[str]) -> int:
    if argv and argv[0] == "check-data" and all("=" in a for a in argv[1:]):
        return check_data(dict(a.split("=", 1) for a in argv[1:]), sys.stdin.read())
    if len(argv) == 4 and argv[0] == "current":
        return 0 if is_current(*argv[1:]) else 1
    print(f"usage:\n{USAGE}", file=sys.stdout if argv[:1] in (["-h"], ["--help"]) else sys.stderr)
    return 0 if argv[:1] in (["-h"], ["--help"]) else 2


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main(sys.argv[1:]))
