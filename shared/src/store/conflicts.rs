//! device_conflicts: list, read, resolve.
