"""Every diagnostic code edgefleet reports: the one registry behind README's code tables.

A code's letter is its severity (E error, W warning, N note); its hundreds digit is the stage
that reports it (see `SECTIONS`). `meaning` says what went wrong, `where` (optional) where the
diagnostic points or what to do. `edgefleet schema` writes `schemas/CODES.md` and the README's
tables (between `<!-- codes:begin ... -->` and `<!-- codes:end -->`) from this list, and
tests/test_codes.py fails when a code used in the source is missing here, when a code here is
used nowhere, or when the generated text is stale.

To add a code: add one `Code(...)` line in code order below, use the code in the source, then run
`edgefleet schema` (from a checkout) and commit the regenerated README and schemas/CODES.md.
"""

from __future__ import annotations

from dataclasses import dataclass

SEVERITIES = {"E": "error", "W": "warning", "N": "note"}

# Hundreds digit -> the stage whose diagnostics use it.
SECTIONS = {
    "0": "Reading files",
    "1": "Document schema",
    "2": "Cross-references",
    "3": "Model vs hardware (validate, explain)",
    "4": "Building artifacts (build)",
    "5": "Keys, compile, plan, publish and verify",
    "6": "Device agent",
    "7": "Rollouts (status, promote)",
    "8": "Simulation (simulate)",
}


@dataclass(frozen=True)
class Code:
    code: str  # letter + three digits, e.g. "E203"
    meaning: str  # markdown, one line
    where: str = ""  # where the diagnostic points, or what it means for the operator

    @property
    def severity(self) -> str:
        return SEVERITIES[self.code[0]]

    @property
    def section(self) -> str:
        return SECTIONS[self.code[1]]


# One line per code, ordered by number within each letter.
_CODES = (
    Code("E001", "file over 64 MiB (split it: every file in `devices/` is read)"),
    Code("E002", "not UTF-8 (position of the first bad byte)"),
    Code("E003", "binary file (NUL bytes)"),
    Code("E004", "YAML syntax error, or nesting deeper than 100 levels (counted on the parser's event stream before anything is composed: libyaml's composer crashed the process past ~10,000)"),
    Code("E005", "duplicate key in a mapping (YAML would silently keep the last)"),
    Code("E006", "alias bomb (\"billion laughs\": aliases expanding to > 100,000 extra nodes) or a recursive alias"),
    Code("E007", "custom or Python YAML tag (`!!python/object`, `!foo`)"),
    Code("E008", "empty file"),
    Code("E009", "non-scalar mapping key"),
    Code("E010", "an integer literal of more than 40 digits (no field takes one; Python's `int()` refuses 4,300)"),
    Code("E011", 'a path leads outside the repository (`..`, absolute, or a symlink resolving outside): model sources, data files, inventories, `trusted_root`, `artifact_store.path`'),
    Code("E012", 'a path that cannot name a repository file: empty, a NUL byte, longer than a file system allows (a name over 255 bytes), or a URL (`s3://…` as `path:`: an object store is `kind: object` with `url:`); `kind: object` without `url`, or `url` without `kind: object`'),
    Code("E013", "the fleet's files add up to more than 256 MiB (a total cap, beside the per-file E001)"),
    Code("E014", 'a fleet file cannot be read (permissions)'),
    Code("E015", '`plan`: the revision commits a symlink or special file (only plain files are read)'),
    Code("E101", "not a mapping, missing or unknown `kind`"),
    Code("E102", "a document of one kind in another kind's folder"),
    Code("E103", "unknown (misspelt) field, with a \"did you mean\""),
    Code("E104", "missing required field"),
    Code("E105", 'wrong type or value (with the field\'s meaning as hint). Every number goes through one type (`spec.common.Int`/`Float`): a whole number is a real integer (not `true`, not `"512"`), every number is finite (no `.inf`, `.nan`) and within ±2^53; a duration is at most `36500d`; an expiry window is positive (a zero window expires at birth). A number where text is expected is quoted back as written (`version: 1.10` → put the value in quotes: `"1.10"`)'),
    Code("E106", "CSV header or row shape wrong, or the CSV cannot be read (a field over the csv module's 128 KiB limit, a runaway quote)"),
    Code("E201", "a hardware class, model or rollout defined twice"),
    Code("E202", "a device id used twice (in one file or across files)"),
    Code("E203", "a device names an unknown hardware class"),
    Code("E204", "a rollout names an unknown model"),
    Code("E205", "a rollout names a version the model does not have"),
    Code("E206", "a selector names an unknown class, site or device"),
    Code("E207", "a rollout selects no device"),
    Code("E208", "wave shares do not increase"),
    Code("E209", "a device is in two rollouts of the same model"),
    Code("E210", "no `fleet.yaml`, or two Fleet documents"),
    Code("E211", "`state.current_wave` out of range"),
    Code("E212", "a model or data file named in a model does not exist"),
    Code("E213", "a version or variant listed twice"),
    Code("E214", "a wave name used twice"),
    Code("E220", 'hardware class: `model_ram_budget_mb` over `ram_mb` (reported at the budget, `-->` at `ram_mb`)', '`model_ram_budget_mb` / `ram_mb`'),
    Code("E221", 'hardware class: two artifacts of `max_artifact_mb` (the A/B slots) do not fit `storage_mb`', '`max_artifact_mb` / `storage_mb`'),
    Code("E222", "hardware class: `model_ram_budget_mb` plus the runtime's own resident memory over `ram_mb`. Figures (one table, `rules/hardware.py`, lower bounds for a CPU session): onnxruntime 31 MB and OpenVINO 70 MB, measured with `bench/bench_runtime_resident.py` (onnxruntime 1.32.0: 30.2 MB, OpenVINO 2026.4.1 CPU: 69.7 MB); TensorRT 600 MB, NVIDIA's figure for loading TensorRT/cuDNN on Jetson (developer forum)", '`model_ram_budget_mb` / `ram_mb` / `runtime.name`'),
    Code("E301", "declared `sha256` ≠ file; the hint gives the real hash and says to update it or restore the file"),
    Code("E302", 'not an ONNX model (corrupt, truncated, another format), or stored with external data: refused, because a model is pinned by the sha256 of its one file (the declared digest and the build key) and side files could change unseen; the hint says how to embed the weights'),
    Code("E303", "estimated artifact over `max_artifact_mb`", "`max_artifact_mb`"),
    Code("E304", "two slots over `storage_mb`", "`storage_mb`"),
    Code("E305", "estimated memory over `model_ram_budget_mb`", "`model_ram_budget_mb`"),
    Code("E306", "an operator the runtime cannot run", "`runtime.name`"),
    Code("E307", "opset or IR version above what the pinned runtime implements (or, for TensorRT, below what it parses)", "`runtime.version`"),
    Code("E308", 'a recipe the class cannot build, by the same rule the build uses (`rules/recipes.py`; the build reports it as E420/E421/E412/E422): a precision the class does not list; OpenVINO dynamic INT8 or entropy calibration; TensorRT dynamic INT8, `symmetric: false` or `reduce_range`; `quantization` on a float recipe; `graph_optimization: extended` outside onnxruntime; static INT8 without `data.calibration`; `exclude_nodes` naming a node the chosen variant lacks. Also an INT8 model on a class without int8, and asymmetric QDQ for TensorRT', '`precisions` / `runtime.name`'),
    Code("E309", "input rank, size or dtype differs from the class's `input`, or a fixed batch differs from `batch_size`", "`input.shape` / `input.dtype` / `batch_size`"),
    Code("E310", "the class requires an accuracy gate (`requires_accuracy_gate`, true by default) but the model has no `data.evaluation` or no `accuracy` budget; or the model declares an `accuracy` budget without `data.evaluation`. One error per model, listing every class. Same rule as the build's E407/E412/E415 (`rules/gates.py`)", '`requires_accuracy_gate`'),
    Code("E401", "the model file's sha256 differs from the declared `sha256`", "the variant's `sha256:`"),
    Code("E403", "an input file cannot be read", "its field (`source:`, `spec.data.*`)"),
    Code("E405", "keyless signing failed in CI: the artifact is not stored", "fleet.yaml `signing.provenance`"),
    Code("E406", "no variant of the model version fits the class (each variant's reason listed)", "the version's `variants:`"),
    Code("E407", "the class requires an accuracy gate but the model has no `accuracy` or evaluation data", "the model's `spec.accuracy` / `spec.data`"),
    Code("E408", "the artifact store cannot be written (disk full, permissions)", "fleet.yaml `artifact_store`"),
    Code("E409", "no recipe passed its gates, so nothing ships", "the first recipe; related: each attempt with its failing gate, value and limit"),
    Code("E410", "source ONNX missing, corrupt, invalid, or not runnable by the runtime"),
    Code("E411", "source ONNX shape not supported (several inputs, non-float input, batch fixed to another size)"),
    Code("E412", "data missing: static int8 without `spec.data.calibration`, accuracy gate without `spec.data.evaluation`, data file absent"),
    Code("E413", "data file malformed (not npz, no `input`, not float32, NaN, labels not one integer per sample)"),
    Code("E414", "data samples do not match the model input shape"),
    Code("E415", "accuracy budget unusable (none on a class that requires it; `top1_accuracy` without labels)"),
    Code("E416", 'a store entry is corrupt: its record does not parse or is for another key, or a blob it names is missing or does not match its sha256 (every read of a record re-hashes its blobs, so an edited store is never a cache hit and never signed into a desired state; `build`, `compile`, `plan` and `explain` all report it)', 'the entry `STORE/keys/<key>/record.json`'),
    Code("E417", "an npz data file that would expand beyond 1 GiB, or whose npy headers claim more than the file holds (sizes and shapes are read from the zip directory and the headers before anything is decompressed)", "the model's `spec.data`"),
    Code("E420", "a recipe the runtime cannot run (OpenVINO dynamic int8 or entropy; TensorRT asymmetric, reduce_range, dynamic; quantization on fp16/fp32; `extended` outside onnxruntime)"),
    Code("E421", "recipe precision not in the class's `precisions`"),
    Code("E422", "`exclude_nodes` names a node the model does not have"),
    Code("E430", "openvino/nncf not installed: `pip install 'edgefleet[openvino]'`"),
    Code("E470", "`verify-artifact`: the provenance is refused (signature, signer identity or repository, trusted root, or the statement is not about the file)", "do not install the artifact; check `--identity`, `--issuer`, `--trusted-root`"),
    Code("E501", "a signing key is missing (names each role, file or environment variable)"),
    Code("E502", "a key file is readable by others", "`chmod 600 FILE`"),
    Code("E503", "not an unencrypted ed25519 PEM key"),
    Code("E504", "keys already exist (`keys init` never overwrites)"),
    Code("E505", "a key directory inside a fleet repository"),
    Code("E506", "unknown role"),
    Code("E507", "root rotation without the old root key (nothing written)"),
    Code("E510", 'a private key is inside the fleet repository (also refused by `validate` and `build`)'),
    Code("E511", "an artifact a device needs is not built (run `edgefleet build`)"),
    Code("E512", "a runtime config template does not render a JSON object"),
    Code("E513", "the previous desired-state tree in `--out` cannot be read"),
    Code("E515", "`--commit`: invalid branch name, or the commit failed"),
    Code("E516", "`--commit`: the branch is the one the fleet repository is on, or its tree holds this fleet's `fleet.yaml`", "give the desired-state branch (fleet.yaml `desired_state_branch`)"),
    Code("E517", "`--keys` or a private key lies inside `--out` (it would be published or committed)", "keep keys outside the output tree"),
    Code("E518", "`signing.trusted_root` is missing, unreadable or not a Sigstore trusted root, or `require_provenance` is set without it", "fleet.yaml `signing`"),
    Code("E520", "`plan`: the repository is not inside a git repository"),
    Code("E521", "`plan`: unknown revision"),
    Code("E540", "invalid target handed to the publisher (a bug in the caller)"),
    Code("E541", "a release counter would go down (nothing written)"),
    Code("E542", "the previous tree is unreadable", "restore it from git: starting over restarts every version at 1, which devices refuse as a rollback"),
    Code("E543", "another publish holds the output directory"),
    Code("E544", "the output tree holds a symbolic link (or a non-file) where the publisher reads or writes (names it; nothing written)", "remove the link; check out the desired-state branch again"),
    Code("E550", "metadata does not verify (malformed, missing role)", "damaged tree: check out the desired-state branch again"),
    Code("E551", "missing file", "incomplete tree; give the directory compile wrote"),
    Code("E552", "freeze: expired metadata", "not re-signed in time: run compile (schedule it); check the clock"),
    Code("E553", "rollback or mix-and-match: version lower than trusted, or not the one the snapshot lists", "replayed or mixed checkout"),
    Code("E554", "untrusted signature", "tampering, a revoked key, or a rotation whose root was not published"),
    Code("E555", "tampered file: length/hash mismatch, or a longer file whose first signed-length bytes are not the signed ones", "a modified or swapped file (e.g. another device's target), or files of different versions mixed"),
    Code("E556", "endless data: the signed bytes followed by more (or more than the client's limit for the timestamp/root)", "padded file"),
    Code("E557", "no target for this device", "device not in the compiled fleet"),
    Code("E558", "wrong device: the target is signed for another device id", "never installed"),
    Code("E559", "wrong hardware class (with `--class`)", "the fleet lists the device in another class"),
    Code("E560", "release counter lower than `--last-counter`", "Uptane-level rollback"),
    Code("E561", "the trusted root is not valid self-signed root metadata", "wrong `--root` file"),
    Code("E563", "the `--cache` directory cannot be written"),
    Code("E601", 'remote unreachable (git or HTTP mirror)'),
    Code("E602", 'branch or tree missing on the remote'),
    Code("E603", 'verified desired state not usable (does not parse, other device, no workload, not built)'),
    Code("E604", 'no artifact store (state names none, no `--store`)'),
    Code("E605", 'artifact digest mismatch, or a truncated download'),
    Code("E606", 'artifact larger than its declared size'),
    Code("E607", 'not enough free space'),
    Code("E608", 'staged model does not load / fails on its golden input'),
    Code("E609", 'probe output outside tolerance'),
    Code("E610", 'probe latency over the class budget'),
    Code("E611", 'failed after the switch: rolled back'),
    Code("E612", 'runtime or accelerator failure: degraded'),
    Code("E613", 'journal unreadable or damaged'),
    Code("E614", 'loop guard tripped'),
    Code("E615", 'offline beyond `max_offline` (reported as a condition)'),
    Code("E616", 'status remote push failed (reports stay queued)'),
    Code("E617", 'device not enrolled'),
    Code("E618", 'artifact store read failed (missing blob, unreachable)'),
    Code("E619", 'another agent is running on this state directory (`agent.lock`, flock)'),
    Code("E620", "provenance refused before staging: the fleet requires it and the artifact's Sigstore bundle is missing or does not verify against the TUF-shipped trusted root and the signer policy"),
    Code("E650", '`enroll`: this device already has a key (never overwritten)'),
    Code("E651", 'no device key: run `edgefleet agent enroll`'),
    Code("E652", 'the device key is readable by others (`chmod 600`)'),
    Code("E653", 'the device key or `device.json` is damaged, or they disagree'),
    Code("E654", 'invalid device id'),
    Code("E660", 'report larger than 64 KiB'),
    Code("E661", 'not a DSSE envelope of an edgefleet report'),
    Code("E662", 'signed payload is not a valid, canonical `edgefleet/report/v1` report'),
    Code("E663", 'the signature does not verify with the enrolled key'),
    Code("E664", 'the report is for another device'),
    Code("E665", "a counter not above the previous report's (replay)"),
    Code("E666", 'the enrolled public key is malformed, not on the curve, or a small-order or non-canonical point (anyone could forge its signatures)'),
    Code("E670", 'the telemetry database cannot be written (disk full), or was damaged and replaced'),
    Code("E671", 'bad telemetry input (non-finite latency, oversize envelope, a counter queued twice with other bytes)'),
    Code("E675", 'the inference API refuses a non-loopback address'),
    Code("E676", 'malformed `--listen` address'),
    Code("E677", 'the listen address is in use (port, live socket, or a non-socket file)'),
    Code("E680", 'reports could not be pushed or read (unreachable, refused by the hook); they stay queued'),
    Code("E681", 'the enrolled-keys file is missing or damaged (the hook refuses rather than accepts)'),
    Code("E682", 'a ref outside `refs/status/`, or one that does not name a device id'),
    Code("E683", 'a device that is not enrolled'),
    Code("E684", 'a deletion or a non-fast-forward'),
    Code("E685", 'a commit that is not one `report.dsse.json` on the previous report (merges, extra files)'),
    Code("E690", 'an agent template is missing or does not render'),
    Code("E701", 'a rollout still has `spec.state` (the hint shows the `status:` block)'),
    Code("E702", 'a report from a device that is not in the inventory'),
    Code("E703", 'a report for a generation the device was never given'),
    Code("E704", 'the reports source cannot be read'),
    Code("E705", 'no desired-state history to check generations against (`--desired`)'),
    Code("E706", "unknown rollout, or several rollouts and a person's action without `--rollout`"),
    Code("E707", "a person's action the rollout's phase does not allow (resume a rollout that is not paused, …)"),
    Code("E708", '`--commit`/`--history`: not a git repository, detached HEAD, file not committed, or the race lost 8 times'),
    Code("E709", 'the rollout file cannot take a new status (not one YAML mapping document)'),
    Code("E710", 'a report whose release counter is below one its device reported before'),
    Code("E801", 'a bad simulation request: unknown fault kind or parameter, bad duration, fewer than 1 device, a latency factor below 1'),
    Code("E802", 'the repository to simulate is not a valid fleet (no `fleet.yaml`, or validate reports errors)'),
    Code("E803", 'a pipeline step of the simulated loop failed (build, compile or promote of the simulated fleet)'),
    Code("E804", "the simulation's work directory cannot be written (git fails there)"),
    Code("W201", "a rollout from a version to itself"),
    Code("W301", "`onnx.checker` rejects the model (runtimes may still load it)"),
    Code("W401", "in GitHub Actions without an OIDC token: provenance unsigned", "fleet.yaml `signing.provenance`"),
    Code("N301", "OpenVINO device not on this host; checked on CPU as a proxy (one note per class)", "`runtime.device`"),
    Code("N510", "compile: the snapshot still lists the bin roles of an earlier, larger `hash_bins` (every device's poll downloads them) until the snapshot key rotates", "`edgefleet keys rotate snapshot --keys DIR`, then compile"),
    Code("N302", "operators could not be checked (runtime not installed, or a version not in the tables)", "`runtime.version`"),
)

REGISTRY: dict[str, Code] = {c.code: c for c in _CODES}


def get(code: str) -> Code:
    """The registry entry of `code` (KeyError names the file to add it to)."""
    try:
        return REGISTRY[code]
    except KeyError:
        raise KeyError(f"{code} is not in edgefleet/core/codes.py; add one line there") from None


def table(prefixes: tuple[str, ...], where_title: str = "") -> str:
    """A markdown table of the codes starting with any of `prefixes` (e.g. ("E0", "W2"))."""
    chosen = [c for c in _CODES if c.code.startswith(prefixes)]
    wide = bool(where_title) and any(c.where for c in chosen)
    lines = ["| code | meaning |" + (f" {where_title} |" if wide else ""),
             "| --- | --- |" + (" --- |" if wide else "")]
    for c in chosen:
        lines.append(f"| {c.code} | {c.meaning} |" + (f" {c.where} |" if wide else ""))
    return "\n".join(lines) + "\n"


def reference() -> str:
    """schemas/CODES.md: every code, by stage."""
    lines = ["# Diagnostic codes", "",
             "Generated by `edgefleet schema` from `compiler/edgefleet/core/codes.py`; do not edit by hand.",
             "Severity is the code's letter: E error (exit 1), W warning, N note.", ""]
    for digit, title in SECTIONS.items():
        chosen = [c for c in _CODES if c.code[1] == digit]
        if not chosen:
            continue
        lines += [f"## {title} ({digit}xx)", "", "| code | severity | meaning | where / what to do |",
                  "| --- | --- | --- | --- |"]
        lines += [f"| {c.code} | {c.severity} | {c.meaning} | {c.where} |" for c in
                  sorted(chosen, key=lambda c: ("EWN".index(c.code[0]), c.code))]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
