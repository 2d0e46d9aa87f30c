//! The `sealstore` binary: a thin shell over the library crates (see `cli/`).

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
