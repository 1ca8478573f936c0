"""`jaxcodec shards verify|info|calibrate`: inspect, verify or (re)calibrate a shard set."""

from __future__ import annotations

import argparse
import json

HELP = "inspect, verify or calibrate a shard set"


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
    calibrate = actions.add_parser(
        "calibrate", help="compute the speaker teacher's calibration (centre, scale, temperature) from the training "
                          "split and record it in index.json: for sets made before precompute did it, or another "
                          "--target-nats")
    calibrate.add_argument("shards", help="shard directory")
    calibrate.add_argument("--target-nats", type=float, default=None,
                           help="mean KL between different speakers' teacher distributions that the temperature "
                                "reaches (default: the set's current target, else "
                                "jaxcodec.data.shards.calibration.DEFAULT_TARGET_NATS)")
    calibrate.set_defaults(func=calibrate_main)


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
    for role in (shards.CONTENT, shards.SPEAKER):
        teacher = prov.get(role) if isinstance(prov.get(role), dict) else {}  # absent, or an edited index
        extra = f", layer {teacher['layer']}" if "layer" in teacher else ""
        label = teacher.get("teacher") or teacher.get("random_init")  # e.g. "phones from PocketSphinx, not HuBERT"
        weights = f"weights sha256 {str(teacher['weights_sha256'])[:12]}…" if teacher.get("weights_sha256") else ""
        details = ", ".join(x for x in (f"dim {teacher.get('dim')}{extra}", weights, label) if x)
        print(f"  {role} teacher: {teacher.get('model')} ({details})")
    calibration = shards.speaker_calibration(prov)
    if calibration is None:
        why = (prov.get(shards.SPEAKER) or {}).get("calibration_skipped") or "made before calibration existed"
        print(f"  speaker calibration: none ({why}; `jaxcodec shards calibrate {args.shards}` adds it)")
    else:
        print(f"  speaker calibration: {_measures_line(calibration)}")
    for key, spec in index["fields"].items():
        print(f"  field {key}: {spec['dtype']} {spec['shape']}")
    return 0


def _measures_line(calibration: dict) -> str:
    raw, after = calibration["raw"], calibration["calibrated"]
    floor = next(k for k in after if k.startswith("floor_batch"))
    return (f"centred, scaled by {calibration['scale']:.4g}, τ = {calibration['temperature']:.4g} (target "
            f"{calibration['target_nats']:g} nats; {calibration['utterances']} training utterances, "
            f"{calibration['speakers']} speakers). Raw at τ = 1 → calibrated: entropy {raw['entropy']:.4f} → "
            f"{after['entropy']:.4f} of {after['uniform_entropy']:.4f} nats, KL between speakers "
            f"{raw['kl_between_speakers']:.4f} → {after['kl_between_speakers']:.4f}, within speakers "
            f"{_nats(raw['kl_within_speakers'])} → {_nats(after['kl_within_speakers'])}, floor of a "
            f"{floor[len('floor_batch'):]}-utterance batch {raw[floor]:.4f} → {after[floor]:.4f}")


def _nats(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def calibrate_main(args: argparse.Namespace) -> int:
    """Recomputes the calibration and rewrites index.json (atomically, under the set's lock)."""
    from jaxcodec import atomic
    from jaxcodec.data import shards
    from jaxcodec.data.shards import calibration as calibration_lib

    with shards.writing(args.shards, shard_index=None):
        reader = shards.ShardReader(args.shards)
        previous = shards.speaker_calibration(reader.provenance) or {}
        target = args.target_nats if args.target_nats is not None else previous.get(
            "target_nats", calibration_lib.DEFAULT_TARGET_NATS)
        try:
            calibration = calibration_lib.calibrate_shards(reader, target)
        except calibration_lib.CalibrationError as err:
            print(f"jaxcodec shards calibrate: error: {err}")
            return 2
        index = dict(reader.index)
        index["provenance"] = {**index["provenance"],
                               shards.SPEAKER: {**index["provenance"][shards.SPEAKER], "calibration": calibration}}
        index["provenance"][shards.SPEAKER].pop("calibration_skipped", None)
        atomic.write_json(reader.directory / shards.INDEX_NAME, index)
    print(f"{args.shards}: speaker calibration {_measures_line(calibration)}")
    return 0
