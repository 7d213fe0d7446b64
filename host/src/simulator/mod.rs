//! The Golioth simulator: an HTTP server with the documented API shapes, for tests, `up` and benchmarks.
