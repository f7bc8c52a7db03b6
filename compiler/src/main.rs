//! The `saferc` command: see `saferc --help`.

fn main() {
    std::process::exit(saferc::cli::run(std::env::args_os()));
}
