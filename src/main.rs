//! The `kvmtune` binary: everything lives in the library; this only hands over argv.

fn main() {
    std::process::exit(kvmtune::cli::main(std::env::args_os().collect()));
}
