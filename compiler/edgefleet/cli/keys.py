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
    from edgefleet.signing import ROLES, SigningError
    from edgefleet.signing.keys import init_keys

    target = Path(args.dir)
    repo = _enclosing_fleet_repo(target)
    if repo is not None:
        raise SigningError("E505", f"refusing to create private keys inside the fleet repository {repo}",
                           "put them outside the fleet repository (e.g. ~/.edgefleet/keys) or in a CI secret; "
                           "`edgefleet compile` refuses a fleet repository that holds a private key", args.dir)
    keys = init_keys(target)
    print(f"created signing keys in {args.dir} (private keys mode 0600):")
    for role in ROLES:
        print(f"  {role:<10} {keys.keyid(role)}")
    print(f"next: keep {args.dir} out of git, back up root.key offline, and run "
          f"`edgefleet compile --keys {args.dir}`", file=sys.stderr)
    return 0


def run_rotate(args) -> int:
    from edgefleet.cli import UsageError
    from edgefleet.signing.keys import PREVIOUS_DIR, rotate_key

    keys_dir = Path(args.keys)
    if not keys_dir.is_dir():
        raise UsageError(f"{args.keys}: no such key directory (make one with `edgefleet keys init DIR`)")
    key = rotate_key(keys_dir, args.role)
    print(f"rotated the {args.role} key in {args.keys}: new keyid {key.keyid}")
    if args.role == "root":
        print(f"the old root key is kept in {keys_dir / PREVIOUS_DIR}/: the next `edgefleet compile "
              f"--keys {args.keys}` signs the new root version with the old and the new key; delete "
              "the old one after that compile is pushed", file=sys.stderr)
    else:
        print(f"the old {args.role} key is deleted; the next `edgefleet compile --keys {args.keys}` "
              "publishes a root version that trusts only the new key", file=sys.stderr)
    return 0


def _enclosing_fleet_repo(path: Path) -> Path | None:
    for parent in [path.resolve(), *path.resolve().parents]:
        if (parent / "fleet.yaml").is_file():
            return parent
    return None
