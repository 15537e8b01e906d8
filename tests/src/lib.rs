//! Helpers for integration tests: locate built binaries, run them like a runtime.
