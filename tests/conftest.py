"""Shared test setup: the emulator's pytest plugin (fixtures `aisearch_emulator`, `aisearch_emulator_env`, ...)."""

pytest_plugins = ["aisearch_ingest.testing"]
