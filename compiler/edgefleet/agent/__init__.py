"""The device agent: reconcile one device toward its signed desired state."""
