//! The `pinion` binary: see `pinion --help` and the README's CLI reference.

fn main() {
    std::process::exit(pinion_runtime::cli::main());
}
