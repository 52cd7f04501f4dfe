//! Replays saved fuzz inputs on stable, through the same checks the fuzz targets run
//! (`fuzz/src/lib.rs`), so a crash found by fuzzing stays fixed in `cargo test`: every file under
//! `tests/fuzz/regressions/<target>/` (crashes found and fixed) and `fuzz/seeds/<target>/` (the
//! committed seed corpus). A directory that names no target fails, so no saved input is silently
//! skipped; so does a target without its `fuzz/fuzz_targets/<target>.rs`.

#[path = "../fuzz/src/lib.rs"]
mod checks;

use std::panic;
use std::path::Path;

/// Runs every saved input under `root`; returns how many ran.
fn replay(root: &Path) -> usize {
    let mut ran = 0;
    let Ok(dirs) = std::fs::read_dir(root) else {
        return 0;
    };
    for dir in dirs {
        let dir = dir.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let Some((_, check)) = checks::TARGETS.iter().find(|(t, _)| *t == name) else {
            panic!("{} names no fuzz target", dir.display());
        };
        for file in std::fs::read_dir(&dir).unwrap() {
            let file = file.unwrap().path();
            let data = std::fs::read(&file).unwrap();
            if panic::catch_unwind(|| check(&data)).is_err() {
                panic!("{} fails its fuzz target's checks again", file.display());
            }
            ran += 1;
        }
    }
    ran
}

#[test]
fn fixed_fuzz_crashes_stay_fixed() {
    replay(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/regressions"));
}

#[test]
fn seed_corpus_passes_every_check() {
    let ran = replay(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds"));
    assert!(ran >= checks::TARGETS.len(), "only {ran} seeds found");
}

#[test]
fn every_target_has_a_fuzz_binary() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets");
    for (name, _) in checks::TARGETS {
        assert!(dir.join(format!("{name}.rs")).is_file(), "{name}");
    }
    let binaries = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(
        binaries,
        checks::TARGETS.len(),
        "fuzz_targets/ and TARGETS differ"
    );
}
