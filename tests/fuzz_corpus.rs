//! The fuzz targets' corpus (`fuzz/corpus/TARGET/`) and the inputs of every crash fuzzing
//! found (`fuzz/regressions/TARGET/`), replayed through the same checks under plain
//! `cargo test`: no fuzzer or nightly toolchain needed to keep the findings fixed.

#[path = "../fuzz/checks.rs"]
mod checks;

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let mut n = 0;
    for dir in ["corpus", "regressions"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("fuzz/{dir}/{target}"));
        let Ok(entries) = std::fs::read_dir(&path) else {
            continue;
        };
        for entry in entries {
            let file = entry.unwrap().path();
            let data = std::fs::read(&file).unwrap();
            if std::panic::catch_unwind(|| check(&data)).is_err() {
                panic!("{target}: {} fails its check", file.display());
            }
            n += 1;
        }
    }
    n
}

#[test]
fn domain_xml_corpus_and_regressions_pass() {
    assert!(replay("domain_xml", checks::domain_xml) >= 5);
}

#[test]
fn cpulist_corpus_and_regressions_pass() {
    assert!(replay("cpulist", checks::cpulist) >= 5);
}

#[test]
fn policy_corpus_and_regressions_pass() {
    assert!(replay("policy", checks::policy) >= 3);
}
