//! The `orchestra-export` binary: parse flags, run, exit with a documented code.

fn main() {
    std::process::exit(orchestra_export::cli::run());
}
