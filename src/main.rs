//! The `sealstore` binary: a thin shell over the library crates (see `cli/`).

#![forbid(unsafe_code)]

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
