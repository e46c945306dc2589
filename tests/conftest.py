"""Test-wide settings: every test reads config/test.yaml (own ports and state dir), so the
suite never collides with a running `make demo`."""

import os

os.environ.setdefault("FLYWHEEL_CONFIG", "config/test.yaml")
