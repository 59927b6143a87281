//! `jitssh-ca` binary: parse arguments, set up logging, dispatch.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser as _;

/// mimalloc: the policy engine and the HTTP path allocate heavily; it gives
/// 10-20 % more certificates/s than glibc's malloc (docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = ca_server::cli::Cli::parse();
    ca_server::logging::init(ca_server::commands::log_format(&cli));
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(ca_server::commands::run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, one sentence: an I/O cause as a person reads
/// it ("no such file"), without the OS error number.
fn describe(e: &anyhow::Error) -> String {
    e.chain()
        .map(|cause| match cause.downcast_ref::<std::io::Error>() {
            Some(io) => ca_server::io_reason::io_reason(io),
            None => cause.to_string(),
        })
        .collect::<Vec<_>>()
        .join(": ")
}
