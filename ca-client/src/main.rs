//! `jitssh`: the engineer's client. `jitssh login` lands with the client issue;
//! for now it can fetch a CA's public keys and login configuration.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "jitssh",
    version,
    about = "Short-lived SSH certificates from your jitssh CA"
)]
struct Cli {
    /// CA URL, e.g. https://ca.example.com
    #[arg(long, env = "JITSSH_CA", global = true)]
    ca: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the CA's user and host public keys.
    CaKeys,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Some(ca) = cli.ca else {
        eprintln!("error: no CA given; pass --ca URL or set JITSSH_CA");
        return ExitCode::from(2);
    };
    match cli.command {
        Command::CaKeys => match fetch_keys(&ca) {
            Ok(keys) => {
                for k in keys.user_ca {
                    println!("user-ca {k}");
                }
                for k in keys.host_ca {
                    println!("host-ca {k}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: cannot fetch keys from {ca}: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn fetch_keys(ca: &str) -> anyhow::Result<ca_core::wire::CaKeys> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let url = format!("{}/v1/ca", ca.trim_end_matches('/'));
        Ok(reqwest::get(url).await?.error_for_status()?.json().await?)
    })
}
