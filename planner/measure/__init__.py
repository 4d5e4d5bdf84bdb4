"""Honest measurement: latency protocol (timer), output quality (quality), isolated worker process (worker)."""
