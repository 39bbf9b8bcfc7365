//! Writes kvmtune's shell completions (bash, zsh, fish) into a directory, from the same clap
//! definition the binary parses with, so they cannot drift from the CLI.
//!
//!     cargo run --example completions -- DIR
//!
//! An example rather than a `kvmtune completions` subcommand: the completions are generated
//! once, at package time (scripts/package.sh), and clap_complete stays a dev-dependency
//! instead of a runtime dependency of the binary libvirt runs as its hook.

use std::path::PathBuf;

use clap::CommandFactory;
use clap_complete::{generate_to, Shell};

fn main() {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: completions DIR");
        std::process::exit(2);
    };
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("completions: cannot create {}: {e}", dir.display());
        std::process::exit(1);
    }
    let mut cmd = kvmtune::cli::Cli::command();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        match generate_to(shell, &mut cmd, "kvmtune", &dir) {
            Ok(path) => println!("{}", path.display()),
            Err(e) => {
                eprintln!(
                    "completions: cannot write {shell} completions into {}: {e}",
                    dir.display()
                );
                std::process::exit(1);
            }
        }
    }
}
