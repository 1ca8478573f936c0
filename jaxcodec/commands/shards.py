"""`jaxcodec shards verify|info`: inspect or verify a shard set."""

from __future__ import annotations

import argparse
import json

HELP = "inspect or verify a shard set"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="shards_command", required=True, metavar="ACTION")
    verify = actions.add_parser("verify", help="check checksums, counts, dims, provenance; non-zero exit on failure")
    verify.add_argument("shards", help="shard directory")
    verify.add_argument("--manifest", help="also check every manifest utterance is in one shard or rejected")
    verify.add_argument("--quick", action="store_true", help="checksums and counts only (do not decode records)")
    verify.add_argument("--verbose", action="store_true", help="print each shard as it is checked")
    verify.set_defaults(func=verify_main)
    show = actions.add_parser("info", help="what a shard set holds and which teachers made it")
    show.add_argument("shards", help="shard directory")
    show.add_argument("--json", action="store_true", help="print index.json without per-shard lists")
    show.set_defaults(func=info_main)


def verify_main(args: argparse.Namespace) -> int:
    from jaxcodec.data import manifest, shards

    ids = [entry["id"] for entry in manifest.read(args.manifest)] if args.manifest else None
    problems, notes = shards.verify(args.shards, manifest_ids=ids, deep=not args.quick, progress=args.verbose)
    for note in notes:
        print(f"note: {note}")
    for problem in problems:
        print(f"FAIL: {problem}")
    if problems:
        print(f"{args.shards}: {len(problems)} problems")
        return 1
    index = shards.load_index(args.shards)
    print(f"{args.shards}: OK ({index['num_records']} utterances in {len(index['shards'])} shards"
          f"{', deep' if not args.quick else ''}{', manifest covered' if ids is not None else ''})")
    return 0


def info_main(args: argparse.Namespace) -> int:
    from jaxcodec.data import shards

    index = shards.load_index(args.shards)
    if args.json:
        print(json.dumps({k: v for k, v in index.items() if k != "shards"}, indent=2))
        return 0
    prov = index["provenance"]
    print(f"{index['num_records']} utterances, {index['audio_seconds'] / 3600:.2f} h in {len(index['shards'])} shards; "
          f"splits {index['splits']}; {index['num_rejects']} rejected")
    for name in ("hubert", "ecapa"):
        teacher = prov.get(name) if isinstance(prov.get(name), dict) else {}  # absent, or an edited index
        extra = f", layer {teacher['layer']}" if "layer" in teacher else ""
        label = teacher.get("teacher") or teacher.get("random_init")  # e.g. "phones from PocketSphinx, not HuBERT"
        weights = f"weights sha256 {str(teacher['weights_sha256'])[:12]}…" if teacher.get("weights_sha256") else ""
        details = ", ".join(x for x in (f"dim {teacher.get('dim')}{extra}", weights, label) if x)
        print(f"  {name}: {teacher.get('model')} ({details})")
    for key, spec in index["fields"].items():
        print(f"  field {key}: {spec['dtype']} {spec['shape']}")
    return 0
