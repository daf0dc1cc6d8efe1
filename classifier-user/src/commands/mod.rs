//! The `meshclass` subcommands. Each returns the process exit code.

pub mod compile;
pub mod validate;
