//! AFL++ target: `threadspace_fuzz::harness::token`. Run with `scripts/fuzz.sh token`.

fn main() {
    afl::fuzz!(|data: &[u8]| threadspace_fuzz::harness::token(data));
}
