"""The whole loop on one machine: the real compiler, a real git server, real HTTP mirrors and
many real agents under injected faults (`edgefleet simulate`, `edgefleet demo`)."""
