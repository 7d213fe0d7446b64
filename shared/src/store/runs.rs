//! Durable sync runs: create, claim with leases (FOR UPDATE SKIP LOCKED), progress, finish, cancel.
