//! Crypto on a vault's crypto endpoint: `encrypt`, `decrypt`, `generateDataEncryptionKey`,
//! `sign`, `verify`, `exportKey`, and sealstore's `reencrypt` extension (decrypt and encrypt again under the
//! key's current version, or another key, without the plaintext leaving the server).
//!
//! AES ciphertexts are kms-core's self-describing format, base64-encoded: each names the key
//! version that made it, so old ciphertexts keep decrypting after rotation. RSA ciphertexts
//! (`encryptionAlgorithm` RSA_OAEP_SHA_1 / RSA_OAEP_SHA_256) are raw OAEP blocks as OCI's, and
//! name no version: the caller sends `keyVersionId` to decrypt under an older one. All of these
//! need `use keys` on every key involved.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use kms_core::byok::ExportRequest;
use kms_core::iam::Verb;
use kms_core::{
    AssociatedData, Key, KeyWrapping, MessageType, Ocid, ResourceType, RsaEncryption, SignatureInput, SigningAlgorithm,
};
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
        "sign" => sign(call, vault),
        "verify" => verify(call, vault),
        "exportKey" => export_key(call, vault),
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

/// The RSA algorithm `encryptionAlgorithm` names for `key`, or `None` for AES-GCM; refuses an
/// algorithm that does not fit the key's shape.
fn rsa_algorithm(key: &Key, algorithm: &Option<String>) -> Result<Option<RsaEncryption>, ApiError> {
    let rsa_key = key.key_shape.algorithm.eq_ignore_ascii_case("RSA");
    match (algorithm.as_deref(), rsa_key) {
        (None | Some(AES_256_GCM), false) => Ok(None),
        (Some(name), true) => RsaEncryption::parse(name).map(Some).ok_or_else(|| {
            ApiError::invalid(format!(
                "encryptionAlgorithm '{name}' does not apply to RSA keys (use RSA_OAEP_SHA_1 or RSA_OAEP_SHA_256)"
            ))
        }),
        (None, true) => Err(ApiError::invalid(
            "key is an RSA key: give encryptionAlgorithm RSA_OAEP_SHA_1 or RSA_OAEP_SHA_256",
        )),
        (Some(other), false) => Err(ApiError::invalid(format!(
            "encryptionAlgorithm '{other}' does not apply to {} keys (use {AES_256_GCM})",
            key.key_shape.algorithm
        ))),
    }
}

fn key_version(field: &str, id: Option<&str>) -> Result<Option<Ocid>, ApiError> {
    id.map(|v| {
        Ocid::parse(ResourceType::KeyVersion, v)
            .map_err(|_| ApiError::invalid(format!("{field} is not a key version id")))
    })
    .transpose()
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
    let key = usable_key(call, vault, d.key_id.as_deref(), "keyId")?;
    let plaintext = decode("plaintext", d.plaintext.as_deref())?;
    if let Some(algorithm) = rsa_algorithm(&key, &d.encryption_algorithm)? {
        let version = key_version("keyVersionId", d.key_version_id.as_deref())?;
        let out = call
            .kms
            .rsa_encrypt(&call.principal, &key.id, version.as_ref(), algorithm, &plaintext)?;
        return Ok(Reply::plain(json!({
            "ciphertext": B64.encode(&out.ciphertext),
            "keyId": out.key_id,
            "keyVersionId": out.key_version_id,
            "encryptionAlgorithm": algorithm.as_str(),
        })));
    }
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
    let key = usable_key(call, vault, d.key_id.as_deref(), "keyId")?;
    let ciphertext = decode("ciphertext", d.ciphertext.as_deref())?;
    if let Some(algorithm) = rsa_algorithm(&key, &d.encryption_algorithm)? {
        let version = key_version("keyVersionId", d.key_version_id.as_deref())?;
        let out = call
            .kms
            .rsa_decrypt(&call.principal, &key.id, version.as_ref(), algorithm, &ciphertext)?;
        return Ok(Reply::plain(json!({
            "plaintext": B64.encode(&out.plaintext[..]),
            "plaintextChecksum": checksum(&out.plaintext),
            "keyId": out.key_id,
            "keyVersionId": out.key_version_id,
            "encryptionAlgorithm": algorithm.as_str(),
        })));
    }
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
struct SignatureDetails {
    key_id: Option<String>,
    key_version_id: Option<String>,
    message: Option<String>,
    message_type: Option<String>,
    signing_algorithm: Option<String>,
    /// verify only.
    signature: Option<String>,
    #[allow(dead_code)] // accepted and ignored, as for encrypt
    logging_context: Option<Value>,
}

/// The parsed parts of a sign or verify body.
struct SignatureParts {
    key: Key,
    version: Option<Ocid>,
    message: Vec<u8>,
    message_type: MessageType,
    algorithm: SigningAlgorithm,
}

impl SignatureParts {
    fn parse(call: &Call<'_>, vault: &Ocid, d: &SignatureDetails) -> Result<SignatureParts, ApiError> {
        let algorithm = SigningAlgorithm::parse(
            d.signing_algorithm
                .as_deref()
                .ok_or_else(|| ApiError::missing("signingAlgorithm"))?,
        )?;
        let message_type = d
            .message_type
            .as_deref()
            .map(MessageType::parse)
            .transpose()?
            .unwrap_or_default();
        let key = usable_key(call, vault, d.key_id.as_deref(), "keyId")?;
        Ok(SignatureParts {
            key,
            version: key_version("keyVersionId", d.key_version_id.as_deref())?,
            message: decode("message", d.message.as_deref())?,
            message_type,
            algorithm,
        })
    }

    fn input(&self) -> SignatureInput<'_> {
        SignatureInput {
            key_id: &self.key.id,
            key_version_id: self.version.as_ref(),
            message: &self.message,
            message_type: self.message_type,
            algorithm: self.algorithm,
        }
    }
}

/// `POST …/20180608/sign`: `{keyId, message, signingAlgorithm[, keyVersionId][, messageType]}`
/// → `{keyId, keyVersionId, signature, signingAlgorithm}`.
fn sign(call: &Call<'_>, vault: &Ocid) -> Result<Reply, ApiError> {
    let d: SignatureDetails = call.json()?;
    let parts = SignatureParts::parse(call, vault, &d)?;
    let out = call.kms.sign(&call.principal, parts.input())?;
    Ok(Reply::plain(json!({
        "keyId": out.key_id,
        "keyVersionId": out.key_version_id,
        "signature": B64.encode(&out.signature),
        "signingAlgorithm": out.algorithm.as_str(),
    })))
}

/// `POST …/20180608/verify`: `{keyId, keyVersionId, message, signature, signingAlgorithm[,
/// messageType]}` → `{isSignatureValid}` (false, not an error, for a signature that does not
/// verify).
fn verify(call: &Call<'_>, vault: &Ocid) -> Result<Reply, ApiError> {
    let d: SignatureDetails = call.json()?;
    let parts = SignatureParts::parse(call, vault, &d)?;
    if parts.version.is_none() {
        return Err(ApiError::missing("keyVersionId"));
    }
    let signature = decode("signature", d.signature.as_deref())?;
    let valid = call.kms.verify(&call.principal, parts.input(), &signature)?;
    Ok(Reply::plain(json!({ "isSignatureValid": valid })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExportKeyDetails {
    key_id: Option<String>,
    key_version_id: Option<String>,
    algorithm: Option<String>,
    public_key: Option<String>,
    #[allow(dead_code)] // accepted and ignored, as for encrypt
    logging_context: Option<Value>,
}

/// `POST …/20180608/exportKey`: `{keyId, algorithm, publicKey[, keyVersionId]}` →
/// `ExportedKeyData` — a SOFTWARE key version's material wrapped under the caller's RSA public
/// key. Needs `manage keys`: the key leaves the service.
fn export_key(call: &Call<'_>, vault: &Ocid) -> Result<Reply, ApiError> {
    let d: ExportKeyDetails = call.json()?;
    let key = keys::authorized(
        call,
        vault,
        d.key_id.as_deref().ok_or_else(|| ApiError::missing("keyId"))?,
        Verb::Manage,
    )?;
    let algorithm = KeyWrapping::parse(d.algorithm.as_deref().ok_or_else(|| ApiError::missing("algorithm"))?)?;
    let public_key = d.public_key.as_deref().ok_or_else(|| ApiError::missing("publicKey"))?;
    let version = key_version("keyVersionId", d.key_version_id.as_deref())?;
    let out = call.kms.export_key(
        &call.principal,
        ExportRequest {
            key_id: &key.id,
            key_version_id: version.as_ref(),
            algorithm,
            public_key_pem: public_key,
        },
    )?;
    Ok(Reply::plain(json!({
        "keyId": out.key_id,
        "keyVersionId": out.key_version_id,
        "vaultId": out.vault_id,
        "timeCreated": out.time_created,
        "encryptedKey": B64.encode(&out.encrypted_key),
        "algorithm": out.algorithm.as_str(),
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
