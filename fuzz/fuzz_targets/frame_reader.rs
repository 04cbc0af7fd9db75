//! AFL++ target: `threadspace_fuzz::harness::frame_reader`. Run with `scripts/fuzz.sh frame_reader`.

fn main() {
    afl::fuzz!(|data: &[u8]| threadspace_fuzz::harness::frame_reader(data));
}
