//! AFL++ target: `threadspace_fuzz::harness::jwks`. Run with `scripts/fuzz.sh jwks`.

fn main() {
    afl::fuzz!(|data: &[u8]| threadspace_fuzz::harness::jwks(data));
}
