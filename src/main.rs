//! The `sealstore` binary: the library's command line (`src/cli/`).

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    sealstore::cli::main()
}
