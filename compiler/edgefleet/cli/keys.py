"""edgefleet keys init DIR | keys rotate ROLE --keys DIR: the desired state's signing keys.

`init` makes one ed25519 key per role (root, targets, snapshot, timestamp, bins) in DIR,
private keys mode 0600. `rotate` replaces one role's key in DIR; the next
`edgefleet compile --keys DIR` publishes the root version that trusts it (signed by
the old and the new key when root itself rotates), and devices walk to it offline.
Keep DIR out of the fleet repository (compile refuses private keys found there).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROLE_CHOICES = ("root", "targets", "snapshot", "timestamp", "bins")


def register(sub) -> None:
    parser = sub.add_parser("keys", help="make or rotate the desired state's signing keys",
                            description=__doc__)
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    init = actions.add_parser("init", help="make a new key for every role in DIR")
    init.add_argument("dir", metavar="DIR", help="directory for the keys (created, mode 0700)")
    init.set_defaults(run=run_init)
    rotate = actions.add_parser("rotate", help="replace one role's key; the next compile publishes it")
    rotate.add_argument("role", metavar="ROLE", choices=ROLE_CHOICES, help="one of: " + ", ".join(ROLE_CHOICES))
    rotate.add_argument("--keys", metavar="DIR", required=True, help="the key directory made by `keys init`")
    rotate.set_defaults(run=run_rotate)


def run_init(args) -> int:
    from edgefleet.pipeline.keys import init

    made = init(Path(args.dir))
    print(f"created signing keys in {args.dir} (private keys mode 0600):")
    for role, keyid in made.keyids.items():
        print(f"  {role:<10} {keyid}")
    print(f"next: keep {args.dir} out of git, back up root.key offline, and run "
          f"`edgefleet compile --keys {args.dir}`", file=sys.stderr)
    return 0


def run_rotate(args) -> int:
    from edgefleet.pipeline.keys import rotate

    rotated = rotate(Path(args.keys), args.role)
    print(f"rotated the {args.role} key in {args.keys}: new keyid {rotated.keyid}")
    if rotated.previous_dir is not None:
        print(f"the old root key is kept in {rotated.previous_dir}/: the next `edgefleet compile "
              f"--keys {args.keys}` signs the new root version with the old and the new key; delete "
              "the old one after that compile is pushed", file=sys.stderr)
    else:
        print(f"the old {args.role} key is deleted; the next `edgefleet compile --keys {args.keys}` "
              "publishes a root version that trusts only the new key", file=sys.stderr)
    return 0
