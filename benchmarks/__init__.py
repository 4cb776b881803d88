"""Benchmarks: scripts run against the emulator in its own process (see README.md here)."""
