"""Shared foundations: diagnostics, source positions, durable file writes."""
