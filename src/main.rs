//! The `iotpay-notify` binary: the service's commands and, with the `devtools` feature (on by
//! default, off in the production image), the development tools' commands.

#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};

/// Receives, verifies, stores, confirms and forwards IOTPay payment notifications.
#[derive(Debug, Parser)]
#[command(name = "iotpay-notify", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Service(iotpay_notify::cli::Command),
    #[cfg(feature = "devtools")]
    #[command(flatten)]
    Dev(iotpay_devtools::cli::Command),
}

fn main() -> std::process::ExitCode {
    iotpay_notify::cli::main_with(|cli: Cli| async move {
        match cli.command {
            Command::Service(command) => iotpay_notify::cli::run(command).await,
            #[cfg(feature = "devtools")]
            Command::Dev(command) => iotpay_devtools::cli::run(command).await,
        }
    })
}
