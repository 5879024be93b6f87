"""edgefleet verify DIR --device ID --root ROOT.json: check one device's desired state as the device would.

Runs the TUF client workflow offline over the tree in DIR (what `edgefleet compile
--out` wrote, or a checkout of the desired-state branch), starting from ROOT.json, the
root the device trusts, then checks that the target is this device's (and class's).
Prints the verified desired state; on any failure prints `error[E5xx]: <reason>` with
a hint and exits 1.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path

from edgefleet.cli.output import add_format_argument


def register(sub) -> None:
    parser = sub.add_parser("verify", help="verify one device's signed desired state offline",
                            description=__doc__)
    parser.add_argument("dir", metavar="DIR", help="the desired-state tree (metadata/ and targets/)")
    parser.add_argument("--device", required=True, metavar="ID", help="device id")
    parser.add_argument("--root", required=True, metavar="ROOT.json",
                        help="the trusted root metadata the device holds (e.g. DIR/metadata/1.root.json)")
    parser.add_argument("--class", dest="hardware_class", metavar="CLASS",
                        help="the device's hardware class; its target must be for this class")
    parser.add_argument("--now", metavar="RFC3339", help="check expiry at this time (default: the clock)")
    parser.add_argument("--last-counter", type=int, metavar="N",
                        help="release counter the device last installed; a lower one is a rollback")
    parser.add_argument("--cache", metavar="DIR",
                        help="the device's metadata cache, kept between runs (rollback protection)")
    add_format_argument(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    from edgefleet.cli import UsageError
    from edgefleet.signing.verify import verify_device

    tree = Path(args.dir)
    if not tree.is_dir():
        raise UsageError(f"{args.dir}: no such directory (give the tree `edgefleet compile --out` wrote)")
    try:
        trusted_root = Path(args.root).read_bytes()
    except OSError as exc:
        raise UsageError(f"{args.root}: cannot read the trusted root ({exc.strerror})") from None
    now = _parse_now(args.now) if args.now else datetime.now(timezone.utc)
    result = verify_device(tree, args.device, trusted_root, now, hardware_class=args.hardware_class,
                           last_counter=args.last_counter,
                           metadata_cache=Path(args.cache) if args.cache else None)
    if args.format == "json":
        try:
            state = json.loads(result.data)
        except ValueError:
            state = None
        payload = {"ok": True, "device": args.device, "path": result.path, "custom": result.custom,
                   "versions": result.versions, "desired_state": state}
        if state is None:
            payload["desired_state_text"] = result.data.decode("utf-8", "replace")
        json.dump(payload, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        text = result.data.decode("utf-8", "replace")
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        versions = ", ".join(f"{role} v{v}" for role, v in result.versions.items())
        print(f"verified {result.path} for {args.device} (release counter "
              f"{result.custom.get('release_counter')}; {versions})", file=sys.stderr)
    return 0


def _parse_now(value: str) -> datetime:
    from edgefleet.cli import UsageError

    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"--now {value!r} is not an RFC 3339 time (e.g. 2025-06-01T12:00:00Z)") from None
    if when.tzinfo is None:
        raise UsageError(f"--now {value!r} has no time zone (add Z for UTC)")
    return when.astimezone(timezone.utc)
