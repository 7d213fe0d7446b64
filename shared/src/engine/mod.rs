//! The sync engine: executes the sync core's plans against Postgres and Golioth, slice by slice.
