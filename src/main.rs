//! The `pullsecretd` binary: parses arguments, calls into the library, maps errors to exit codes.

fn main() {}
