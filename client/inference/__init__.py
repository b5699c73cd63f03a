"""On-device inference: ranking, fold-in and sessions (numpy only, no torch)."""
