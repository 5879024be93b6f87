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
    parser.add_argument("--now", metavar="RFC3339",
                        help="check expiry at this time (default: the clock); more than 5 minutes from the "
                             "clock needs --allow-clock-skew")
    parser.add_argument("--allow-clock-skew", action="store_true",
                        help="accept a --now far from this host's clock (checking an old or future tree on purpose)")
    parser.add_argument("--last-counter", type=int, metavar="N",
                        help="release counter the device last installed; a lower one is a rollback")
    parser.add_argument("--cache", metavar="DIR",
                        help="the device's metadata cache, kept between runs (rollback protection)")
    add_format_argument(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    from edgefleet.pipeline.common import check_clock, parse_time
    from edgefleet.pipeline.verify import VerifyRequest, verify

    clock = datetime.now(timezone.utc)
    now = clock
    if args.now:
        now = parse_time(args.now)
        check_clock(now, clock, args.allow_clock_skew)
    result = verify(VerifyRequest(Path(args.dir), args.device, Path(args.root), now, args.hardware_class,
                                  args.last_counter, Path(args.cache) if args.cache else None))
    if args.format == "json":
        payload = {"ok": True, "device": result.device, "path": result.path, "custom": result.custom,
                   "versions": result.versions, "desired_state": result.state}
        if result.state is None:
            payload["desired_state_text"] = result.text
        json.dump(payload, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        text = result.text
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        versions = ", ".join(f"{role} v{v}" for role, v in result.versions.items())
        print(f"verified {result.path} for {result.device} (release counter "
              f"{result.custom.get('release_counter')}; {versions})", file=sys.stderr)
    return 0
