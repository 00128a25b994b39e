"""Self-configuration: dataset fingerprint -> plan (spacing, normalisation, patch, batch, topology, steps)."""
