"""edgefleet: a declarative GitOps compiler for edge-AI fleets.

A fleet repository declares hardware classes, devices, model versions and rollout
waves in YAML; edgefleet validates them, builds per-class artifacts, and compiles a
signed desired state per device. See README.md and DESIGN.md for the data flow.
"""

__version__ = "0.1.0"
API_VERSION = "edgefleet/v1"
