"""edgefleet verify-artifact FILE --bundle B --trusted-root R --identity ID --issuer URL

Verifies FILE's Sigstore bundle offline against the pinned trusted root and the expected
signer: exit 0 verified, 1 refused (with the reason), 2 usage (a missing file or flag).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from edgefleet.cli.output import add_format_argument, emit
from edgefleet.core.diagnostics import error
from edgefleet.core.source import Location


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
    if verdict.ok:
        if args.format == "json":
            json.dump({"ok": True, "file": verdict.path, "sha256": verdict.sha256, "reason": None,
                       "kind": verdict.provenance.kind, "identity": verdict.provenance.identity,
                       "issuer": verdict.provenance.issuer, "subjects": verdict.provenance.subjects},
                      sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            print(f"{args.file}: verified: sha256:{verdict.sha256} signed by {args.identity} ({args.issuer})")
        return 0
    refused = error("E470", f"provenance refused: {verdict.reason}", Location(args.file),
                    "do not install this artifact; check that it is the file CI built, and that --identity, "
                    "--issuer and --trusted-root are the fleet's signing policy")
    return emit([refused], args.format, command="verify-artifact", file=verdict.path, sha256=verdict.sha256,
                reason=verdict.reason)
