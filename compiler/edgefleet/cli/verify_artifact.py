"""edgefleet verify-artifact FILE --bundle B --trusted-root R --identity ID --issuer URL

Verifies FILE's Sigstore bundle offline against the pinned trusted root and the expected
signer: exit 0 verified, 1 refused (with the reason), 2 usage (a missing file or flag).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from edgefleet.cli.output import add_format_argument


def register(sub) -> None:
    parser = sub.add_parser("verify-artifact", help="verify an artifact's Sigstore provenance offline",
                            description=__doc__)
    parser.add_argument("file", metavar="FILE", help="the artifact")
    parser.add_argument("--bundle", required=True, metavar="B", help="its Sigstore bundle (JSON)")
    parser.add_argument("--trusted-root", required=True, metavar="R", help="the pinned Sigstore trusted_root.json")
    parser.add_argument("--identity", required=True, metavar="ID",
                        help="expected signer identity (certificate SAN), e.g. a workflow URL @ ref")
    parser.add_argument("--issuer", required=True, metavar="URL", help="expected OIDC issuer")
    parser.add_argument("--repository", metavar="OWNER/NAME",
                        help="also require the GitHub repository the signing workflow ran in")
    add_format_argument(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    from edgefleet.cli import UsageError
    from edgefleet.pipeline.verify_artifact import verify_artifact

    for flag, value in (("FILE", args.file), ("--bundle", args.bundle), ("--trusted-root", args.trusted_root)):
        if not Path(value).is_file():
            raise UsageError(f"{flag} {value}: no such file")
    verdict = verify_artifact(Path(args.file), Path(args.bundle).read_bytes(), Path(args.trusted_root),
                              args.identity, args.issuer, repository=args.repository)
    if args.format == "json":
        out = {"ok": verdict.ok, "file": verdict.path, "sha256": verdict.sha256, "reason": verdict.reason}
        if verdict.provenance is not None:
            out.update(kind=verdict.provenance.kind, identity=verdict.provenance.identity,
                       issuer=verdict.provenance.issuer, subjects=verdict.provenance.subjects)
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif verdict.ok:
        print(f"{args.file}: verified: sha256:{verdict.sha256} signed by {args.identity} ({args.issuer})")
    else:
        print(f"{args.file}: error[E470]: provenance refused: {verdict.reason}\n"
              "  = hint: do not install this artifact; check that it is the file CI built, and that --identity, "
              "--issuer and --trusted-root are the fleet's signing policy", file=sys.stderr)
    return 0 if verdict.ok else 1
