//! Crypto on a vault's crypto endpoint: `encrypt`, `decrypt`, `generateDataEncryptionKey`,
//! and sealstore's `reencrypt` extension (decrypt and encrypt again under the key's current
//! version, or another key, without the plaintext leaving the server).
//!
//! Ciphertexts are kms-core's self-describing format, base64-encoded: each names the key
//! version that made it, so old ciphertexts keep decrypting after rotation. All of these need
//! `use keys` on every key involved.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use kms_core::iam::Verb;
use kms_core::{AssociatedData, Key, Ocid, ResourceType};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::keys::{self, KeyShapeDetails};
use super::{Call, Reply};

/// The only algorithm of symmetric sealstore keys.
const AES_256_GCM: &str = "AES_256_GCM";

/// Routes `POST …/20180608/{operation}` on the crypto endpoint of `vault`.
pub(crate) fn operation(call: &Call<'_>, vault: &Ocid, operation: &str) -> Result<Reply, ApiError> {
    match operation {
        "encrypt" => encrypt(call, vault),
        "decrypt" => decrypt(call, vault),
        "generateDataEncryptionKey" => generate_data_encryption_key(call, vault),
        "reencrypt" => reencrypt(call, vault),
        _ => Err(ApiError::not_found(format_args!("crypto operation '{operation}'"))),
    }
}

/// The key `id` of `vault` if the caller may use it (the request field `field` names it).
fn usable_key(call: &Call<'_>, vault: &Ocid, id: Option<&str>, field: &str) -> Result<Key, ApiError> {
    keys::authorized(call, vault, id.ok_or_else(|| ApiError::missing(field))?, Verb::Use)
}

/// The request's associated data: OCI's `associatedData` map, or sealstore's
/// `rawAssociatedData` extension (base64 bytes, bound as they are; what a remote sealstore
/// data path sends), never both.
fn associated_data(map: Option<BTreeMap<String, String>>, raw: Option<String>) -> Result<AssociatedData, ApiError> {
    match (map, raw) {
        (Some(_), Some(_)) => Err(ApiError::invalid("give associatedData or rawAssociatedData, not both")),
        (None, Some(raw)) => Ok(AssociatedData::Raw(decode("rawAssociatedData", Some(&raw))?)),
        (map, None) => Ok(map.map(AssociatedData::from_map).unwrap_or_default()),
    }
}

fn check_algorithm(algorithm: &Option<String>) -> Result<(), ApiError> {
    match algorithm.as_deref() {
        None | Some(AES_256_GCM) => Ok(()),
        Some(other) => Err(ApiError::invalid(format!(
            "encryptionAlgorithm '{other}' does not apply to AES keys (use {AES_256_GCM})"
        ))),
    }
}

fn decode(field: &str, value: Option<&str>) -> Result<Vec<u8>, ApiError> {
    B64.decode(value.ok_or_else(|| ApiError::missing(field))?)
        .map_err(|_| ApiError::invalid(format!("{field} must be base64")))
}

/// OCI's `plaintextChecksum`: the CRC-32 of the plaintext, in decimal.
fn checksum(plaintext: &[u8]) -> String {
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32IsoHdlc, plaintext).to_string()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EncryptDetails {
    key_id: Option<String>,
    plaintext: Option<String>,
    associated_data: Option<BTreeMap<String, String>>,
    raw_associated_data: Option<String>,
    key_version_id: Option<String>,
    encryption_algorithm: Option<String>,
    #[allow(dead_code)] // accepted and ignored: sealstore's audit log records the call itself
    logging_context: Option<Value>,
}

fn encrypt(call: &Call<'_>, vault: &Ocid) -> Result<Reply, ApiError> {
    let d: EncryptDetails = call.json()?;
    check_algorithm(&d.encryption_algorithm)?;
    let key = usable_key(call, vault, d.key_id.as_deref(), "keyId")?;
    let plaintext = decode("plaintext", d.plaintext.as_deref())?;
    let version = d
        .key_version_id
        .as_deref()
        .map(|v| Ocid::parse(ResourceType::KeyVersion, v))
        .transpose()?;
    let out = call.kms.encrypt_with_version(
        &call.principal,
        &key.id,
        version.as_ref(),
        &plaintext,
        &associated_data(d.associated_data, d.raw_associated_data)?,
    )?;
    Ok(Reply::plain(json!({
        "ciphertext": B64.encode(&out.ciphertext),
        "keyId": out.key_id,
        "keyVersionId": out.key_version_id,
        "encryptionAlgorithm": AES_256_GCM,
    })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DecryptDetails {
    key_id: Option<String>,
    ciphertext: Option<String>,
    associated_data: Option<BTreeMap<String, String>>,
    raw_associated_data: Option<String>,
    key_version_id: Option<String>,
    encryption_algorithm: Option<String>,
    #[allow(dead_code)] // accepted and ignored, as for encrypt
    logging_context: Option<Value>,
}

fn decrypt(call: &Call<'_>, vault: &Ocid) -> Result<Reply, ApiError> {
    let d: DecryptDetails = call.json()?;
    check_algorithm(&d.encryption_algorithm)?;
    let key = usable_key(call, vault, d.key_id.as_deref(), "keyId")?;
    let ciphertext = decode("ciphertext", d.ciphertext.as_deref())?;
    let out = call.kms.decrypt(
        &call.principal,
        &ciphertext,
        &associated_data(d.associated_data, d.raw_associated_data)?,
        Some(&key.id),
    )?;
    if let Some(v) = d.key_version_id.as_deref() {
        if v != out.key_version_id.as_str() {
            return Err(ApiError::invalid(format!(
                "the ciphertext was made by key version {}, not {v}",
                out.key_version_id
            )));
        }
    }
    Ok(Reply::plain(json!({
        "plaintext": B64.encode(&out.plaintext[..]),
        "plaintextChecksum": checksum(&out.plaintext),
        "keyId": out.key_id,
        "keyVersionId": out.key_version_id,
        "encryptionAlgorithm": AES_256_GCM,
    })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerateKeyDetails {
    key_id: Option<String>,
    key_shape: Option<KeyShapeDetails>,
    #[serde(default)]
    include_plaintext_key: bool,
    associated_data: Option<BTreeMap<String, String>>,
    raw_associated_data: Option<String>,
    #[allow(dead_code)] // accepted and ignored, as for encrypt
    logging_context: Option<Value>,
}

fn generate_data_encryption_key(call: &Call<'_>, vault: &Ocid) -> Result<Reply, ApiError> {
    let d: GenerateKeyDetails = call.json()?;
    d.key_shape
        .as_ref()
        .ok_or_else(|| ApiError::missing("keyShape"))?
        .require_aes256()?;
    let key = usable_key(call, vault, d.key_id.as_deref(), "keyId")?;
    let out = call.kms.generate_data_key(
        &call.principal,
        &key.id,
        &associated_data(d.associated_data, d.raw_associated_data)?,
        d.include_plaintext_key,
    )?;
    let (plaintext, checksum) = match &out.plaintext {
        Some(dek) => (json!(B64.encode(dek.expose())), json!(checksum(dek.expose()))),
        None => (Value::Null, Value::Null),
    };
    // keyId and keyVersionId: sealstore's additions to OCI's GeneratedKey.
    Ok(Reply::plain(json!({
        "ciphertext": B64.encode(&out.wrapped),
        "plaintext": plaintext,
        "plaintextChecksum": checksum,
        "keyId": out.key_id,
        "keyVersionId": out.key_version_id,
    })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReencryptDetails {
    key_id: Option<String>,
    ciphertext: Option<String>,
    associated_data: Option<BTreeMap<String, String>>,
    raw_associated_data: Option<String>,
    destination_key_id: Option<String>,
}

/// sealstore extension: `{keyId, ciphertext[, associatedData][, destinationKeyId]}` →
/// `{ciphertext, keyId, keyVersionId, sourceKeyVersionId}`; the destination key (default: the
/// same key, at its current version) must be in the same vault.
fn reencrypt(call: &Call<'_>, vault: &Ocid) -> Result<Reply, ApiError> {
    let d: ReencryptDetails = call.json()?;
    let source = usable_key(call, vault, d.key_id.as_deref(), "keyId")?;
    let destination = match d.destination_key_id.as_deref() {
        Some(id) => usable_key(call, vault, Some(id), "destinationKeyId")?,
        None => source.clone(),
    };
    let ciphertext = decode("ciphertext", d.ciphertext.as_deref())?;
    let made_by = kms_core::ciphertext::parse(&ciphertext)?;
    if made_by.key_id != source.id {
        return Err(ApiError::invalid(format!(
            "the ciphertext was made by key {}, not {}",
            made_by.key_id, source.id
        )));
    }
    let source_version = made_by.key_version_id.clone();
    let out = call.kms.rewrap(
        &call.principal,
        &ciphertext,
        &associated_data(d.associated_data, d.raw_associated_data)?,
        Some(&destination.id),
    )?;
    Ok(Reply::plain(json!({
        "ciphertext": B64.encode(&out.ciphertext),
        "keyId": out.key_id,
        "keyVersionId": out.key_version_id,
        "sourceKeyVersionId": source_version,
    })))
}
