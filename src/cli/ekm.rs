//! `sealstore ekm`: the reference external key manager (see `crate::external_kms::server`).

use std::process::ExitCode;
use std::sync::Arc;

use crate::external_kms::server::{KeyManager, RevokedClients};
use crate::external_kms::token::TokenVerifier;
use anyhow::Context;
use clap::{Args, Subcommand};
use kms_core::{Ocid, Principal, ResourceType};
use serde_json::{json, Value};

use super::api::Api;
use super::{output, GlobalOpts};

/// The vault `ekm key create` puts keys in.
const EKM_VAULT_NAME: &str = "external";
/// Written by `ekm serve` in its data directory: where it listens.
pub(super) const EKM_SERVE_FILE: &str = "ekm.json";

#[derive(Debug, Args)]
pub(super) struct EkmArgs {
    #[command(subcommand)]
    command: EkmCommand,
}

#[derive(Debug, Subcommand)]
enum EkmCommand {
    /// Serve the key-manager protocol (docs/EXTERNAL_KMS.md) over this data directory's keys.
    /// Key commands below (and `sealstore kms …`) reach it through its admin socket.
    Serve {
        /// Address to listen on (port 0: any free port; see <data-dir>/ekm.json).
        #[arg(long, default_value = "127.0.0.1:9200")]
        listen: std::net::SocketAddr,
        /// The JWKS of the clients allowed in: a file, or an http(s) URL read at start
        /// (`sealstore kms jwks` prints a sealstore's).
        #[arg(long, value_name = "FILE|URL")]
        jwks: String,
        /// The audience tokens must name: this manager's URL as clients call it
        /// [default: http[s]://<listen address>].
        #[arg(long, value_name = "URL")]
        audience: Option<String>,
        /// Serve over TLS with this certificate chain (PEM); needs --tls-key.
        #[arg(long, requires = "tls_key", value_name = "FILE")]
        tls_cert: Option<std::path::PathBuf>,
        /// The private key (PEM) of --tls-cert.
        #[arg(long, requires = "tls_cert", value_name = "FILE")]
        tls_key: Option<std::path::PathBuf>,
    },
    /// External keys.
    #[command(subcommand)]
    Key(EkmKeyCommand),
    /// Refuse every request of a client (its tokens' `sub`: a sealstore's tenancy id) until
    /// restored. Takes effect at once, also on a running server.
    RevokeClient { client_id: String },
    /// Let a revoked client in again.
    RestoreClient { client_id: String },
}

#[derive(Debug, Subcommand)]
enum EkmKeyCommand {
    /// Create a key (in the vault "external", made on first use); prints its id and its
    /// vault's id.
    Create { name: String },
    /// Rotate: a new current version; the old ones keep working until disabled.
    Rotate { key_id: String },
    /// Disable a key: every encrypt and decrypt under it is refused.
    Disable { key_id: String },
    /// Enable a disabled key.
    Enable { key_id: String },
}

pub(super) fn run(global: &GlobalOpts, args: EkmArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        EkmCommand::Serve {
            listen,
            jwks,
            audience,
            tls_cert,
            tls_key,
        } => {
            let tls = match (tls_cert, tls_key) {
                (Some(cert), Some(key)) => Some(crate::kms_api::tls::acceptor(&cert, &key)?),
                _ => None,
            };
            serve(global, listen, &jwks, audience, tls)
        }
        EkmCommand::Key(cmd) => {
            let api = Api::new(global);
            let value = match cmd {
                EkmKeyCommand::Create { name } => {
                    let vault = external_vault(&api)?;
                    api.post(
                        &format!(
                            "/kms/{}/management/20180608/keys",
                            vault["id"].as_str().unwrap_or_default()
                        ),
                        json!({
                            "compartmentId": vault["compartmentId"],
                            "displayName": name,
                            "keyShape": { "algorithm": "AES", "length": 32 },
                        }),
                    )?
                }
                EkmKeyCommand::Rotate { key_id } => api.post(&format!("{}/keyVersions", key(&key_id)?), json!({}))?,
                EkmKeyCommand::Disable { key_id } => {
                    api.post(&format!("{}/actions/disable", key(&key_id)?), json!({}))?
                }
                EkmKeyCommand::Enable { key_id } => {
                    api.post(&format!("{}/actions/enable", key(&key_id)?), json!({}))?
                }
            };
            if global.json {
                output::json(&value);
            } else {
                output::fields(&value);
            }
            Ok(ExitCode::SUCCESS)
        }
        EkmCommand::RevokeClient { client_id } => set_revoked(global, &client_id, true),
        EkmCommand::RestoreClient { client_id } => set_revoked(global, &client_id, false),
    }
}

/// A key on the KMS API's regional endpoint.
fn key(id: &str) -> anyhow::Result<String> {
    Ok(format!("/20180608/keys/{}", Ocid::parse(ResourceType::Key, id)?))
}

/// The vault "external", created if missing.
fn external_vault(api: &Api<'_>) -> anyhow::Result<Value> {
    let vaults = api.list("/20180608/vaults")?;
    let existing = vaults
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["displayName"] == EKM_VAULT_NAME && v["lifecycleState"] == "ACTIVE");
    match existing {
        Some(v) => Ok(v.clone()),
        None => api.post(
            "/20180608/vaults",
            json!({
                "compartmentId": api.tenancy()?,
                "displayName": EKM_VAULT_NAME,
                "vaultType": "DEFAULT",
            }),
        ),
    }
}

fn set_revoked(global: &GlobalOpts, client: &str, revoked: bool) -> anyhow::Result<ExitCode> {
    let list = RevokedClients::new(&global.data_dir);
    let changed = list
        .set(client, revoked)
        .with_context(|| format!("updating the revocation list in {}", global.data_dir.display()))?;
    let state = if revoked { "revoked" } else { "allowed" };
    if changed {
        println!("client {client} is now {state}");
    } else {
        println!("client {client} was already {state}");
    }
    Ok(ExitCode::SUCCESS)
}

fn serve(
    global: &GlobalOpts,
    listen: std::net::SocketAddr,
    jwks: &str,
    audience: Option<String>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> anyhow::Result<ExitCode> {
    let jwks_text = if jwks.starts_with("http://") || jwks.starts_with("https://") {
        let timeouts = crate::http_client::Timeouts {
            connect: std::time::Duration::from_secs(2),
            read: std::time::Duration::from_secs(5),
            total: std::time::Duration::from_secs(10),
        };
        let client = crate::http_client::BlockingClient::new(None, timeouts, "jwks").map_err(anyhow::Error::msg)?;
        let answer = client
            .send(http::Method::GET, jwks, http::HeaderMap::new(), None)
            .with_context(|| format!("fetching the JWKS {jwks}"))?;
        anyhow::ensure!(
            answer.status.is_success(),
            "fetching the JWKS {jwks}: {}",
            answer.status
        );
        String::from_utf8(answer.body.to_vec()).context("the JWKS is not text")?
    } else {
        std::fs::read_to_string(jwks).with_context(|| format!("reading the JWKS {jwks}"))?
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        let bound = listener.local_addr()?;
        let url = format!("{}://{bound}", if tls.is_some() { "https" } else { "http" });
        let audience = audience.unwrap_or_else(|| url.clone());
        let verifier = TokenVerifier::new(&jwks_text, audience.clone()).map_err(anyhow::Error::msg)?;
        let dir = global.open_data_dir(None)?;
        dir.kms.ensure_iam_defaults(&Principal::local_admin())?;
        let manager = Arc::new(KeyManager::new(dir.kms.clone(), verifier, &global.data_dir));
        let socket_path = global.data_dir.join(crate::admin::SOCKET_FILE);
        let admin_listener = crate::admin::server::bind(&socket_path)
            .with_context(|| format!("binding the admin socket {}", socket_path.display()))?;
        let admin_task = tokio::spawn(crate::admin::server::serve(
            admin_listener,
            dir.admin_target(),
            socket_path.clone(),
        ));
        let serve_task = tokio::spawn(manager.serve(listener, tls));
        let info = global.data_dir.join(EKM_SERVE_FILE);
        std::fs::write(&info, serde_json::json!({"url": url, "audience": audience}).to_string())?;
        println!("external key manager on {url} (tokens for audience {audience})");
        println!("ready; press Ctrl-C to stop");
        super::serve::shutdown_signal().await;
        serve_task.abort();
        admin_task.abort();
        let _ = std::fs::remove_file(&info);
        let _ = std::fs::remove_file(&socket_path);
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
