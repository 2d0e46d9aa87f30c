//! `sealstore s3 …`: the S3 API's users and their access keys.

use std::process::ExitCode;

use crate::admin::Request;
use clap::{Args, Subcommand};

use super::output::{self, Column};
use super::{dispatch, GlobalOpts};

#[derive(Debug, Args)]
pub(super) struct S3Args {
    #[command(subcommand)]
    command: S3Command,
}

#[derive(Debug, Subcommand)]
enum S3Command {
    /// Users of the S3 API and their access keys (every user may use every bucket).
    #[command(subcommand)]
    User(UserCommand),
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user with a new access key; the secret is printed once, here.
    Add {
        /// User name: 1–64 letters, digits, '.', '_', '-' or '@'.
        name: String,
    },
    /// List users and their access key ids (never the secrets).
    List,
    /// Remove a user: its access key stops working at once, also on a running server.
    Remove {
        /// The user's name or access key id.
        user: String,
        /// Remove it even if it is the last user (no client can then sign in).
        #[arg(long)]
        force: bool,
    },
}

const USER_COLUMNS: &[Column] = &[("NAME", "name"), ("ACCESS KEY", "accessKeyId"), ("CREATED", "created")];

pub(super) fn run(global: &GlobalOpts, args: S3Args) -> anyhow::Result<ExitCode> {
    let S3Command::User(command) = args.command;
    let (req, table) = match command {
        UserCommand::Add { name } => (Request::S3UserAdd { name }, false),
        UserCommand::List => (Request::S3UserList, true),
        UserCommand::Remove { user, force } => (Request::S3UserRemove { user, force }, false),
    };
    let value = dispatch(global, req)?;
    if global.json {
        output::json(&value);
    } else if table {
        output::table(&value, USER_COLUMNS);
    } else {
        output::fields(&value);
    }
    Ok(ExitCode::SUCCESS)
}
