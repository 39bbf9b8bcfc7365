//! The value words a VM's metadata, the policy's `[defaults]` and `kvmtune run`'s options share
//! go through one parser each: the three places accept the same words, to the same value, and
//! refuse the same ones, each naming the value and where it was written.

use clap::Parser;

use kvmtune::cli::{Cli, Command};
use kvmtune::domain::metadata::{IrqChoice, IsolateChoice, Reserve};
use kvmtune::domain::Domain;
use kvmtune::policy::Policy;

/// The metadata's `<element attr='word'/>`, parsed as the hook parses a domain.
fn metadata(element: &str, attr: &str, word: &str) -> Result<kvmtune::domain::Tune, String> {
    Domain::parse(&format!(
        "<domain><name>w</name><memory unit='MiB'>64</memory><vcpu>1</vcpu><metadata>\
         <k:tune xmlns:k='urn:kvmtune:1'><k:{element} {attr}='{word}'/></k:tune></metadata></domain>"
    ))
    .map(|d| d.tune)
    .map_err(|e| e.to_string())
}

/// The policy's `[defaults] key = "word"`.
fn policy(key: &str, word: &str) -> Result<Policy, String> {
    Policy::parse(&format!("[defaults]\n{key} = \"{word}\"\n"))
}

/// `kvmtune run --option word -- qemu`.
fn option(option: &str, word: &str) -> Result<kvmtune::cli::RunArgs, String> {
    let cli = Cli::try_parse_from(["kvmtune", "run", option, word, "--", "qemu"])
        .map_err(|e| e.to_string())?;
    match cli.command {
        Command::Run(run) => Ok(run),
        _ => unreachable!("run parses as run"),
    }
}

const WORDS: [&str; 22] = [
    "auto",
    "on",
    "off",
    "vcpus",
    "housekeeping",
    "0",
    "1-3",
    "0-7,^3",
    " 2 ",
    "",
    " ",
    "^0",
    "3-1",
    "0-99999999",
    "yes",
    "ON",
    "VCPUS",
    "1,",
    "house",
    "a-b",
    "vcpus,1",
    "none",
];

#[test]
fn reserve_words_are_taken_and_refused_alike() {
    for word in WORDS {
        let direct = word.parse::<Reserve>();
        let m = metadata("hugepages", "reserve", word);
        let p = policy("hugepages", word);
        let o = option("--hugepages", word);
        match &direct {
            Ok(want) => {
                assert_eq!(
                    m.unwrap().hugepages.as_ref(),
                    Some(want),
                    "metadata {word:?}"
                );
                assert_eq!(&p.unwrap().default_hugepages, want, "policy {word:?}");
                assert_eq!(o.unwrap().hugepages.as_ref(), Some(want), "option {word:?}");
            }
            Err(e) => {
                let m = m.unwrap_err();
                assert!(
                    m.contains(&format!("<hugepages reserve='{}'>", word.trim())),
                    "{m}"
                );
                let p = p.unwrap_err();
                assert!(p.starts_with("defaults.hugepages = "), "{p}");
                let o = o.unwrap_err();
                assert!(o.contains("--hugepages"), "{o}");
                for text in [&m, &p, &o] {
                    assert!(text.contains(e.expected), "{word:?}: {text}");
                }
            }
        }
    }
}

#[test]
fn isolate_words_are_taken_and_refused_alike() {
    for word in WORDS {
        let direct = word.parse::<IsolateChoice>();
        let m = metadata("isolate", "cpus", word);
        let p = policy("isolate", word);
        let o = option("--isolate", word);
        match &direct {
            Ok(want) => {
                assert_eq!(m.unwrap().isolate.as_ref(), Some(want), "metadata {word:?}");
                assert_eq!(&p.unwrap().default_isolate, want, "policy {word:?}");
                assert_eq!(o.unwrap().isolate.as_ref(), Some(want), "option {word:?}");
            }
            Err(e) => {
                let p = p.unwrap_err();
                assert!(p.starts_with("defaults.isolate = "), "{p}");
                for text in [&m.unwrap_err(), &p, &o.unwrap_err()] {
                    assert!(text.contains(e.expected), "{word:?}: {text}");
                    if let Some(why) = &e.why {
                        assert!(text.contains(why.as_str()), "{word:?}: {text}");
                    }
                }
            }
        }
    }
}

#[test]
fn irq_words_are_taken_and_refused_alike() {
    for word in WORDS {
        let direct = word.parse::<IrqChoice>();
        let m = metadata("irq", "cpus", word);
        let p = policy("irq", word);
        let o = option("--irq", word);
        match &direct {
            Ok(want) => {
                assert_eq!(m.unwrap().irq.as_ref(), Some(want), "metadata {word:?}");
                assert_eq!(&p.unwrap().default_irq, want, "policy {word:?}");
                assert_eq!(o.unwrap().irq.as_ref(), Some(want), "option {word:?}");
            }
            Err(e) => {
                let p = p.unwrap_err();
                assert!(p.starts_with("defaults.irq = "), "{p}");
                for text in [&m.unwrap_err(), &p, &o.unwrap_err()] {
                    assert!(text.contains(e.expected), "{word:?}: {text}");
                }
            }
        }
    }
}

#[test]
fn the_words_cover_every_outcome() {
    // The table above means something only if it has words each parser takes and refuses.
    let taken = |f: &dyn Fn(&str) -> bool| WORDS.iter().filter(|w| f(w)).count();
    for (name, ok) in [
        ("reserve", taken(&|w| w.parse::<Reserve>().is_ok())),
        ("isolate", taken(&|w| w.parse::<IsolateChoice>().is_ok())),
        ("irq", taken(&|w| w.parse::<IrqChoice>().is_ok())),
    ] {
        assert!(ok >= 3 && ok <= WORDS.len() - 10, "{name}: {ok} taken");
    }
}
