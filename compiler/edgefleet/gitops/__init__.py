"""GitOps plumbing for fleet repositories: the `edgefleet init` scaffold."""
