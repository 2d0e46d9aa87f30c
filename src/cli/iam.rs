//! `sealstore iam …`: who may use the KMS API — users and their API signing keys, groups,
//! policies, compartments.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::admin::Request;
use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::Value;

use super::output::{self, Column};
use super::{dispatch, GlobalOpts};

#[derive(Debug, Args)]
pub(super) struct IamArgs {
    #[command(subcommand)]
    command: IamCommand,
}

#[derive(Debug, Subcommand)]
enum IamCommand {
    /// API users: they sign KMS API requests (the `oci` CLI, SDKs) with an RSA key pair.
    #[command(subcommand)]
    User(UserCommand),
    /// Groups of users, which policies grant access to.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Policies: `Allow group G to inspect|read|use|manage
    /// vaults|keys|key-family|compartments|audit-events|all-resources in tenancy|compartment C
    /// [where target.key.id = '…']`. `read audit-events in tenancy` opens the audit log (API
    /// and the console's Audit page).
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Compartments: the tenancy's tree that vaults and keys live in and policies name.
    #[command(subcommand)]
    Compartment(CompartmentCommand),
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user; with --public-key, prints its fingerprint and a ready ~/.oci/config profile.
    Add {
        /// User name.
        name: String,
        /// RSA public key in PEM (`openssl rsa -pubout`), for request signatures.
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// Put the user in this group (repeatable; `Administrators` may do everything).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Add another API public key to a user (at most three).
    AddKey {
        /// User name.
        name: String,
        /// RSA public key in PEM.
        #[arg(long)]
        public_key: PathBuf,
    },
    /// Set the user's password for the web console (/console/ on the KMS API's address),
    /// read from standard input (hidden when typed); stored as an Argon2id hash.
    SetPassword {
        /// User name.
        name: String,
        /// Remove the password instead: the user can no longer sign in to the console.
        #[arg(long)]
        remove: bool,
    },
    /// List users and their key fingerprints.
    List,
    /// Delete a user: its signatures stop working at once, also on a running server.
    Remove {
        /// User name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum GroupCommand {
    /// Create a group.
    Create {
        /// Group name, as policies will spell it.
        name: String,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Add a user to a group.
    AddUser {
        /// Group name.
        group: String,
        /// User name.
        user: String,
    },
    /// List groups and their members.
    List,
    /// Delete a group.
    Delete {
        /// Group name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Create a policy from one or more statements (checked now, not at first use).
    Create {
        /// Policy name.
        name: String,
        /// A statement (repeatable), e.g. "Allow group Auditors to read key-family in tenancy".
        #[arg(long = "statement", required = true)]
        statements: Vec<String>,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List policies and their statements.
    List,
    /// Delete a policy.
    Delete {
        /// Policy name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum CompartmentCommand {
    /// Create a compartment.
    Create {
        /// Name (unique among its siblings).
        name: String,
        /// Parent compartment, by name or id [default: the tenancy].
        #[arg(long)]
        parent: Option<String>,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List compartments (the tenancy first).
    List,
}

const USER_COLUMNS: &[Column] = &[
    ("NAME", "name"),
    ("ID", "id"),
    ("KEYS", "keys"),
    ("CREATED", "timeCreated"),
];
const GROUP_COLUMNS: &[Column] = &[("NAME", "name"), ("ID", "id"), ("MEMBERS", "members")];
const POLICY_COLUMNS: &[Column] = &[("NAME", "name"), ("STATEMENTS", "statements")];
const COMPARTMENT_COLUMNS: &[Column] = &[
    ("NAME", "name"),
    ("ID", "id"),
    ("PARENT", "compartmentId"),
    ("STATE", "lifecycleState"),
];

/// A password from standard input: its first line, not echoed when typed at a terminal.
fn read_password() -> anyhow::Result<zeroize::Zeroizing<String>> {
    use std::io::IsTerminal;
    let terminal = std::io::stdin().is_terminal();
    let ask = |prompt: &str| -> anyhow::Result<zeroize::Zeroizing<String>> {
        if terminal {
            eprint!("{prompt}");
            let _ = std::process::Command::new("stty").arg("-echo").status();
        }
        let mut line = zeroize::Zeroizing::new(String::new());
        let read = std::io::stdin().read_line(&mut line);
        if terminal {
            let _ = std::process::Command::new("stty").arg("echo").status();
            eprintln!();
        }
        read.context("reading the password from standard input")?;
        Ok(zeroize::Zeroizing::new(line.trim_end_matches(['\n', '\r']).to_owned()))
    };
    let password = ask(&format!(
        "console password (at least {} characters): ",
        crate::console::password::MIN_LEN
    ))?;
    anyhow::ensure!(!password.is_empty(), "no password on standard input");
    // At a terminal, typed twice: a typo would lock the user out.
    if terminal && ask("the same password again: ")? != password {
        anyhow::bail!("the two passwords differ; nothing was changed");
    }
    Ok(password)
}

fn read_pem(path: &PathBuf) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading the public key {}", path.display()))
}

pub(super) fn run(global: &GlobalOpts, args: IamArgs) -> anyhow::Result<ExitCode> {
    let (req, columns): (Request, Option<&[Column]>) = match args.command {
        IamCommand::User(UserCommand::Add {
            name,
            public_key,
            groups,
            description,
        }) => {
            let public_key_pem = public_key.as_ref().map(read_pem).transpose()?;
            let user = dispatch(
                global,
                Request::IamUserAdd(kms_core::iam::CreateUser {
                    name,
                    description,
                    public_key_pem,
                    groups,
                }),
            )?;
            print_new_user(global, &user)?;
            return Ok(ExitCode::SUCCESS);
        }
        IamCommand::User(UserCommand::AddKey { name, public_key }) => (
            Request::IamUserAddKey {
                name,
                public_key_pem: read_pem(&public_key)?,
            },
            None,
        ),
        IamCommand::User(UserCommand::SetPassword { name, remove }) => {
            let phc = if remove {
                None
            } else {
                let password = read_password()?;
                Some(crate::console::password::hash(&password)?)
            };
            let removed = phc.is_none();
            let user = dispatch(
                global,
                Request::IamUserSetPassword {
                    name: name.clone(),
                    phc,
                },
            )?;
            if global.json {
                output::json(&user);
            } else if removed {
                println!("console password of user {name} removed: it can no longer sign in to the console");
            } else {
                println!("console password set for user {name}");
            }
            return Ok(ExitCode::SUCCESS);
        }
        IamCommand::User(UserCommand::List) => (Request::IamUserList, Some(USER_COLUMNS)),
        IamCommand::User(UserCommand::Remove { name }) => (Request::IamUserRemove { name }, None),
        IamCommand::Group(GroupCommand::Create { name, description }) => {
            (Request::IamGroupCreate { name, description }, None)
        }
        IamCommand::Group(GroupCommand::AddUser { group, user }) => (Request::IamGroupAddUser { group, user }, None),
        IamCommand::Group(GroupCommand::List) => (Request::IamGroupList, Some(GROUP_COLUMNS)),
        IamCommand::Group(GroupCommand::Delete { name }) => (Request::IamGroupDelete { name }, None),
        IamCommand::Policy(PolicyCommand::Create {
            name,
            statements,
            description,
        }) => (
            Request::IamPolicyCreate {
                name,
                description,
                statements,
            },
            None,
        ),
        IamCommand::Policy(PolicyCommand::List) => (Request::IamPolicyList, Some(POLICY_COLUMNS)),
        IamCommand::Policy(PolicyCommand::Delete { name }) => (Request::IamPolicyDelete { name }, None),
        IamCommand::Compartment(CompartmentCommand::Create {
            name,
            parent,
            description,
        }) => (
            Request::IamCompartmentCreate {
                name,
                description,
                parent,
            },
            None,
        ),
        IamCommand::Compartment(CompartmentCommand::List) => (Request::IamCompartmentList, Some(COMPARTMENT_COLUMNS)),
    };
    let value = dispatch(global, req)?;
    if global.json {
        output::json(&value);
    } else if let Some(columns) = columns {
        output::table(&for_table(value), columns);
    } else {
        output::fields(&value);
    }
    Ok(ExitCode::SUCCESS)
}

/// Lists as one cell: key fingerprints, member counts, statements joined.
fn for_table(mut rows: Value) -> Value {
    for row in rows.as_array_mut().into_iter().flatten() {
        if let Some(keys) = row.get("apiKeys").and_then(Value::as_array) {
            let prints: Vec<&str> = keys.iter().filter_map(|k| k["fingerprint"].as_str()).collect();
            row["keys"] = prints.join(", ").into();
        }
        if let Some(members) = row.get("members").and_then(Value::as_array) {
            row["members"] = members.len().into();
        }
        if let Some(statements) = row.get("statements").and_then(Value::as_array) {
            let text: Vec<&str> = statements.iter().filter_map(Value::as_str).collect();
            row["statements"] = text.join(" | ").into();
        }
    }
    rows
}

/// The new user, and with a key, the `~/.oci/config` profile that signs as it.
fn print_new_user(global: &GlobalOpts, user: &Value) -> anyhow::Result<()> {
    if global.json {
        output::json(user);
        return Ok(());
    }
    let status = dispatch(global, Request::Status)?;
    println!(
        "user         {} ({})",
        user["name"].as_str().unwrap_or_default(),
        user["id"].as_str().unwrap_or_default()
    );
    let Some(fingerprint) = user["apiKeys"][0]["fingerprint"].as_str() else {
        println!("no API key yet: sealstore iam user add-key NAME --public-key FILE");
        return Ok(());
    };
    println!("fingerprint  {fingerprint}");
    println!();
    println!("# ~/.oci/config profile; key_file is the private key of the public key given");
    println!("[{}]", user["name"].as_str().unwrap_or("DEFAULT"));
    println!("user={}", user["id"].as_str().unwrap_or_default());
    println!("fingerprint={fingerprint}");
    println!("tenancy={}", status["tenancyId"].as_str().unwrap_or_default());
    println!("region={}", status["region"].as_str().unwrap_or_default());
    println!("key_file=~/.oci/sealstore_api_key.pem");
    Ok(())
}
