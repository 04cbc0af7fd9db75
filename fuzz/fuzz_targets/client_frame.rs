//! AFL++ target: `threadspace_fuzz::harness::client_frame`. Run with `scripts/fuzz.sh client_frame`.

fn main() {
    afl::fuzz!(|data: &[u8]| threadspace_fuzz::harness::client_frame(data));
}
