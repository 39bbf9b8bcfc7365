//! The state directory under damage: a write torn by a crash (a temp file never renamed),
//! a truncated or garbage journal or ledger. kvmtune keeps working, says what it set aside,
//! and never half-restores; `recover` is idempotent.

mod common;

use std::fs;

use common::{bound, diff, huge_vm, kernel, state_path, Bench, GIB};

fn two_nodes() -> Bench {
    Bench::new(kernel(&[(4 * GIB, "0-1"), (4 * GIB, "2-3")]))
}

fn vm(name: &str, mib: u64) -> String {
    huge_vm(name, mib, &bound("strict", "1"))
}

fn ledger_path(b: &Bench) -> std::path::PathBuf {
    state_path(b).join("ledger.json")
}

#[test]
fn a_temp_file_left_by_a_torn_write_is_ignored_and_removed() {
    let b = two_nodes();
    let start = b.snapshot();
    b.prepare("a", &vm("a", 64)).unwrap();
    let ledger = b.ledger();
    // kvmtune was killed after writing half a new ledger to its temp file.
    let good = fs::read(ledger_path(&b)).unwrap();
    let tmp = state_path(&b).join(".ledger.json.tmp4242");
    fs::write(&tmp, &good[..good.len() / 2]).unwrap();
    let journal_tmp = state_path(&b).join(".journal-a.json.tmp4243");
    fs::write(&journal_tmp, b"{\"vm\": \"a\", \"oper").unwrap();
    assert_eq!(
        b.ledger(),
        ledger,
        "the ledger in place is the old, whole one"
    );
    b.prepare("b", &vm("b", 64)).unwrap();
    assert!(!tmp.exists() && !journal_tmp.exists(), "temp files removed");
    assert!(b.ledger().vms.contains_key("a") && b.ledger().vms.contains_key("b"));
    b.release("a").unwrap();
    b.release("b").unwrap();
    assert_eq!(diff(&start, &b.snapshot()), Vec::<String>::new());
    assert_eq!(b.state_files(), Vec::<String>::new());
}

/// What the state directory holds besides the lock, by kind of damage: each is set aside and
/// the next operation goes on.
#[test]
fn a_truncated_or_garbage_ledger_is_set_aside_and_kvmtune_goes_on() {
    for (case, damage) in [
        ("truncated", None),
        ("garbage", Some(b"\x00\xff not json at all".to_vec())),
        ("empty", Some(Vec::new())),
        ("wrong shape", Some(b"{\"vms\": 42}".to_vec())),
    ] {
        let b = two_nodes();
        b.prepare("a", &vm("a", 64)).unwrap();
        let good = fs::read(ledger_path(&b)).unwrap();
        let bad = damage.unwrap_or_else(|| good[..good.len() / 3].to_vec());
        fs::write(ledger_path(&b), &bad).unwrap();
        // Read-only users say what is wrong, in one line naming the file.
        let err = b.state().load_ledger().unwrap_err().to_string();
        assert!(
            err.contains("ledger.json") && err.contains("unreadable") && !err.contains('\n'),
            "{case}: {err}"
        );
        // The next hook call sets it aside and works: a new VM is tuned and given back exactly.
        let before_b = b.snapshot();
        b.prepare("b", &vm("b", 64)).unwrap();
        assert_eq!(
            fs::read(state_path(&b).join("ledger.json.corrupt")).unwrap(),
            bad,
            "{case}: set aside as it was"
        );
        assert_eq!(
            b.ledger().vms.keys().collect::<Vec<_>>(),
            vec!["b"],
            "{case}: what the damaged ledger held is forgotten"
        );
        b.release("b").unwrap();
        assert_eq!(
            diff(&before_b, &b.snapshot()),
            Vec::<String>::new(),
            "{case}"
        );
        // `a`, forgotten, keeps its pages: kvmtune never undoes what it cannot account for.
        assert_eq!(b.kernel.pool(1, 2048).nr, 32, "{case}");
        assert_eq!(b.state_files(), vec!["ledger.json.corrupt".to_string()]);
    }
}

#[test]
fn a_truncated_or_garbage_journal_is_set_aside_and_the_others_are_finished() {
    for case in ["truncated", "garbage"] {
        let b = two_nodes();
        let start = b.snapshot();
        // `b`'s prepare is killed after it grew the pool, before it committed.
        common::quiet_injected_crashes();
        b.kernel.crash_at_point(Some(3));
        let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            b.prepare("b", &vm("b", 64))
        }));
        assert!(crashed.is_err());
        assert_eq!(b.kernel.pool(1, 2048).nr, 32, "b's grow was made");
        // And a journal of `a` is damaged.
        let a_journal = state_path(&b).join("journal-a.json");
        let good = fs::read(state_path(&b).join("journal-b.json")).unwrap();
        let bad = match case {
            "truncated" => good[..good.len() / 2].to_vec(),
            _ => b"journal? what journal".to_vec(),
        };
        fs::write(&a_journal, &bad).unwrap();
        let err = b.state().journals().unwrap_err().to_string();
        assert!(
            err.contains("journal-a.json") && err.contains("unreadable"),
            "{err}"
        );
        assert_eq!(b.recover_all().unwrap(), Vec::<String>::new());
        assert!(!a_journal.exists());
        assert_eq!(
            fs::read(state_path(&b).join("journal-a.json.corrupt")).unwrap(),
            bad
        );
        // `b`'s interrupted prepare was undone: the host is as at the start.
        assert_eq!(diff(&start, &b.snapshot()), Vec::<String>::new(), "{case}");
        assert_eq!(
            b.state_files(),
            vec!["journal-a.json.corrupt".to_string()],
            "{case}"
        );
    }
}

#[test]
fn recover_is_idempotent() {
    let b = two_nodes();
    let start = b.snapshot();
    b.prepare("gone", &vm("gone", 64)).unwrap();
    b.started("gone").unwrap();
    b.prepare("other", &vm("other", 128)).unwrap();
    b.started("other").unwrap();
    assert_eq!(b.recover_one("gone").unwrap(), vec!["gone".to_string()]);
    let after_one = b.snapshot();
    let ledger = b.ledger();
    for _ in 0..3 {
        assert_eq!(b.recover_one("gone").unwrap(), Vec::<String>::new());
        assert_eq!(diff(&after_one, &b.snapshot()), Vec::<String>::new());
        assert_eq!(b.ledger(), ledger);
    }
    assert_eq!(b.recover_all().unwrap(), vec!["other".to_string()]);
    for _ in 0..3 {
        assert_eq!(b.recover_all().unwrap(), Vec::<String>::new());
        assert_eq!(diff(&start, &b.snapshot()), Vec::<String>::new());
        assert_eq!(b.state_files(), Vec::<String>::new());
    }
}
