"""Where a lesson's cluster comes from: existing, kind, hetzner, gke, sandbox."""
