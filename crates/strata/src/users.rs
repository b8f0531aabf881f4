//! `strata user`, `strata token` and `strata whoami`: the credentials side of the CLI.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use strata_auth::{Mechanism, Principal};

use crate::cli::BrokerArg;

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Add a SASL/SCRAM user, or change its password. The password is read from
    /// --password-stdin or STRATA_USER_PASSWORD (never a flag value: it would show in
    /// the process list and shell history).
    Add {
        name: String,
        /// SCRAM-SHA-256 or SCRAM-SHA-512; repeat for both [default: both].
        #[arg(long = "mechanism")]
        mechanisms: Vec<Mechanism>,
        /// PBKDF2 iterations (4096 to 16384).
        #[arg(long, default_value_t = strata_auth::scram::DEFAULT_ITERATIONS)]
        iterations: u32,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Users with their mechanisms and iteration counts.
    List,
    /// Remove a user's credentials.
    Remove {
        name: String,
        /// SCRAM-SHA-256 or SCRAM-SHA-512; repeat for both [default: every one it has].
        #[arg(long = "mechanism")]
        mechanisms: Vec<Mechanism>,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Make a bearer token for gRPC: its hash is appended to FILE (the broker's
    /// grpc_token_file, reloaded within seconds), the token printed once.
    Create {
        /// Who the token authenticates as (User:NAME or NAME).
        name: String,
        /// The token file to append to (created if missing, readable by its owner only).
        #[arg(long)]
        file: PathBuf,
    },
}

pub async fn user(command: UserCommand, broker: &BrokerArg) -> Result<()> {
    let client = broker.connect().await?;
    match command {
        UserCommand::Add {
            name,
            mechanisms,
            iterations,
            password_stdin,
        } => {
            let password = password(password_stdin)?;
            let mechanisms = if mechanisms.is_empty() {
                Mechanism::ALL.to_vec()
            } else {
                mechanisms
            };
            for m in mechanisms {
                client.upsert_user(&name, m, &password, iterations).await?;
                println!("user {name:?}: {} set", m.name());
            }
        }
        UserCommand::List => {
            for u in client.list_users().await? {
                let creds: Vec<String> = u
                    .credentials
                    .iter()
                    .map(|c| format!("{} ({} iterations)", c.mechanism, c.iterations))
                    .collect();
                println!("{}\t{}", u.name, creds.join(", "));
            }
        }
        UserCommand::Remove { name, mechanisms } => {
            let mechanisms = if mechanisms.is_empty() {
                let users = client.list_users().await?;
                let Some(u) = users.iter().find(|u| u.name == name) else {
                    bail!("user {name:?} does not exist; list users with `strata user list`");
                };
                u.credentials
                    .iter()
                    .filter_map(|c| c.mechanism.parse().ok())
                    .collect()
            } else {
                mechanisms
            };
            for m in mechanisms {
                client.delete_user(&name, m).await?;
                println!("user {name:?}: {} removed", m.name());
            }
        }
    }
    Ok(())
}

fn password(stdin: bool) -> Result<String> {
    let p = if stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        line.trim_end_matches(['\r', '\n']).to_string()
    } else {
        match std::env::var("STRATA_USER_PASSWORD") {
            Ok(p) => p,
            Err(_) => bail!(
                "no password: pass --password-stdin (and the password on standard input), or set STRATA_USER_PASSWORD"
            ),
        }
    };
    if p.is_empty() {
        bail!("the password is empty; give a non-empty one");
    }
    Ok(p)
}

pub fn token(command: TokenCommand) -> Result<()> {
    match command {
        TokenCommand::Create { name, file } => {
            let principal = Principal::parse(&name)?;
            let token = strata_auth::tokens::generate();
            let line = strata_auth::tokens::line(&principal, &token);
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&file)
                .with_context(|| format!("opening token file {}", file.display()))?;
            writeln!(f, "{line}")
                .and_then(|()| f.sync_all())
                .with_context(|| format!("writing token file {}", file.display()))?;
            eprintln!(
                "token for {principal} added to {} (shown once; pass it with --token or STRATA_TOKEN):",
                file.display()
            );
            println!("{token}");
        }
    }
    Ok(())
}

pub async fn whoami(broker: &BrokerArg) -> Result<()> {
    println!("{}", broker.connect().await?.who_am_i().await?);
    Ok(())
}
