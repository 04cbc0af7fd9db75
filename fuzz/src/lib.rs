//! The fuzz harnesses, for the AFL++ targets in `fuzz_targets/`. The code lives in
//! `harness.rs`, which the gateway's corpus replay test also includes.

pub mod harness;
