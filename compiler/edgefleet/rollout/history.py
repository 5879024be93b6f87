"""The audit log of rollouts: every decision recorded in the git history of rollouts/*.yaml.

`promote --commit` writes each decision into the rollout file's `status.last_decision`,
one commit per decision, so walking the commits that touched a rollout file (oldest
first) and reading the decision each one records gives the rollout's full history with
its evidence. A commit whose file does not parse, or repeats the decision of the commit
before it (a person's edit of `spec`), adds no entry. The I/O edge (gitpython).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import git

from edgefleet.core.diagnostics import Diagnostic, error
from edgefleet.core.source import Location
from edgefleet.load.yamlsource import parse_yaml
from edgefleet.spec.rollout import Decision, RolloutStatus


@dataclass(frozen=True)
class HistoryEntry:
    rollout: str
    file: str
    commit: str
    decision: Decision

    def to_json(self) -> dict:
        return {"rollout": self.rollout, "file": self.file, "commit": self.commit,
                "decision": self.decision.model_dump(mode="json")}


def _decision_of(data: bytes, shown: str) -> tuple[str | None, Decision | None]:
    docs, diags = parse_yaml(data, shown)
    if diags or not docs or not isinstance(docs[0].data, dict):
        return None, None
    doc = docs[0].data
    name = (doc.get("metadata") or {}).get("name") if isinstance(doc.get("metadata"), dict) else None
    try:
        status = RolloutStatus.model_validate(doc.get("status") or {})
    except ValueError:
        return name, None
    return name, status.last_decision


def read_history(root: Path, rollout: str | None = None) -> tuple[list[HistoryEntry], list[Diagnostic]]:
    try:
        repo = git.Repo(root, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return [], [error("E708", f"{root} is not inside a git repository", Location(str(root)),
                          "--history reads the git history of rollouts/*.yaml; run it in a clone")]
    top = Path(repo.working_tree_dir).resolve()
    prefix = Path(root).resolve().relative_to(top).as_posix()
    folder = "rollouts" if prefix == "." else f"{prefix}/rollouts"
    try:
        commits = list(repo.iter_commits(paths=folder, reverse=True))
    except (git.GitCommandError, ValueError):
        return [], []
    entries: list[HistoryEntry] = []
    last: dict[str, Decision] = {}
    for commit in commits:
        try:
            tree = commit.tree / folder
        except KeyError:
            continue
        for blob in sorted(tree.blobs, key=lambda b: b.path):
            if not blob.path.endswith((".yaml", ".yml")):
                continue
            name, decision = _decision_of(blob.data_stream.read(), blob.path)
            if name is None or decision is None or (rollout is not None and name != rollout):
                continue
            if last.get(blob.path) == decision:
                continue
            last[blob.path] = decision
            entries.append(HistoryEntry(name, blob.path, commit.hexsha, decision))
    return entries, []
