//! The `iotpay-notify` binary: everything happens in the library's `cli` module.

fn main() -> std::process::ExitCode {
    iotpay_notify::cli::main()
}
