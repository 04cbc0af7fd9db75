//! Replays every committed fuzz corpus file (`fuzz/corpus/<target>/`) and the harness's seeds
//! through the fuzz harness, so every `cargo test` checks what the fuzzer found still passes.
//! Real fuzzing is `scripts/fuzz.sh`; see docs/fuzzing.md.

#[path = "../../fuzz/src/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target)
}

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("cannot list {}: {error}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).expect("corpus file reads");
            (path.display().to_string(), bytes)
        })
        .collect()
}

/// Runs every input, then fails naming each one whose run panicked.
fn replay(target: &str) {
    let mut inputs = corpus(target);
    assert!(!inputs.is_empty(), "no corpus for {target}: {}", corpus_dir(target).display());
    inputs.extend(harness::seeds(target).into_iter().enumerate().map(|(i, s)| (format!("seed {i}"), s)));
    let failed: Vec<String> = inputs
        .iter()
        .filter(|(_, bytes)| std::panic::catch_unwind(|| harness::run(target, bytes)).is_err())
        .map(|(name, _)| name.clone())
        .collect();
    assert!(failed.is_empty(), "{target}: {} of {} inputs failed: {failed:?}", failed.len(), inputs.len());
}

#[test]
fn frame_reader_corpus() {
    replay("frame_reader");
}

#[test]
fn client_frame_corpus() {
    replay("client_frame");
}

#[test]
fn token_corpus() {
    replay("token");
}

#[test]
fn jwks_corpus() {
    replay("jwks");
}

/// The harness's accept paths are reachable: otherwise its invariants check nothing.
#[test]
fn harness_seeds_are_accepted() {
    let keys = threadspace_protocol::token::KeySet::parse(
        harness::fuzz_jwks().as_bytes(),
        "fuzz key set",
        harness::ISSUER,
        harness::AUDIENCE,
    )
    .expect("fuzz key set loads");
    let identity = keys.verify(&harness::valid_token()).expect("the seed token verifies");
    assert_eq!((identity.user.0, identity.org.0), (42, 7));
    for seed in &harness::seeds("client_frame")[..7] {
        threadspace_protocol::frames::decode_client_frame(seed).expect("seed frame decodes");
    }
    assert_eq!(harness::TARGETS.len(), 4);
}

/// Writes the harness's seeds to `fuzz/corpus/<target>/seed-N` (to start a corpus afresh):
/// `cargo test -p threadspace-gateway --test fuzz_corpus -- --ignored write_seeds`.
#[test]
#[ignore = "writes files; run by hand to re-seed the corpus"]
fn write_seeds() {
    for target in harness::TARGETS {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).expect("creates corpus dir");
        for (i, seed) in harness::seeds(target).iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), seed).expect("writes seed");
        }
    }
}
