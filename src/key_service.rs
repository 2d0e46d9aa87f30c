//! [`KeyService`]: the one async face of key management for the data paths (objects and S3
//! through [`crate::object::store::EncryptedStore`] and the object service's key checks,
//! volumes, the remote key provider).
//!
//! A [`KeyProvider`] is synchronous, and some of its calls may block: an HSM, an EXTERNAL key
//! manager or another sealstore's KMS over the network, a store write. The provider says which
//! ([`KeyProvider::placement`], decided in kms-core from the key's protection mode); the
//! service follows it, so that no caller chooses `spawn_blocking` for a key call itself:
//!
//! - [`Placement::Inline`] calls (a SOFTWARE key of the embedded KMS whose audit entries go
//!   to the background writer: a key lookup and a few microseconds of AES) run on the calling
//!   async worker, cheaper than a hop to the blocking pool and back;
//! - [`Placement::Blocking`] calls run on tokio's blocking pool;
//! - a provider that waits on the network and can be awaited ([`KeyProvider::as_async`]: the
//!   client of another sealstore's KMS API) is awaited on the caller's runtime, holding no
//!   thread while it waits.
//!
//! Unwrap and rewrap ask about the key the wrapped DEK's self-describing header names.

use std::sync::Arc;

use kms_core::{
    ciphertext, AsyncKeyProvider, DataKey, Dek, KeyFuture, KeyProvider, KeyStatus, KeyVersionState, KmsError, Ocid,
    Placement,
};

/// Why a key call through the [`KeyService`] failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyServiceError {
    /// The key provider refused or failed.
    #[error(transparent)]
    Key(#[from] KmsError),
    /// The call panicked, or its runtime shut down, on the blocking pool.
    #[error("{action} stopped before it finished: {source}")]
    Interrupted {
        /// The call.
        action: &'static str,
        /// What stopped it.
        source: tokio::task::JoinError,
    },
}

/// Result of a [`KeyService`] call.
pub(crate) type Result<T, E = KeyServiceError> = std::result::Result<T, E>;

/// Key calls for async callers, each run where its provider says (see the module docs).
#[derive(Clone, Debug)]
pub(crate) struct KeyService {
    provider: Arc<dyn KeyProvider>,
}

impl KeyService {
    /// The service over `provider`.
    pub(crate) fn new(provider: Arc<dyn KeyProvider>) -> Self {
        KeyService { provider }
    }

    /// A fresh DEK wrapped by the current version of `key_id`, bound to `aad`
    /// ([`KeyProvider::generate_data_key`]).
    pub(crate) async fn generate_data_key(&self, key_id: &Ocid, aad: &[u8]) -> Result<DataKey> {
        let (key, owned_aad) = (key_id.clone(), aad.to_vec());
        self.run(
            self.provider.placement(key_id),
            "getting a data key",
            |p| p.generate_data_key(key_id, aad),
            move |p| p.generate_data_key(&key, &owned_aad),
        )
        .await
    }

    /// Unwraps a DEK made by [`KeyService::generate_data_key`] with the same `aad`
    /// ([`KeyProvider::unwrap_data_key`]).
    pub(crate) async fn unwrap_data_key(&self, wrapped: &[u8], aad: &[u8]) -> Result<Dek> {
        let (owned_wrapped, owned_aad) = (wrapped.to_vec(), aad.to_vec());
        self.run(
            self.placement_of(wrapped),
            "unwrapping a data key",
            |p| p.unwrap_data_key(wrapped, aad),
            move |p| p.unwrap_data_key(&owned_wrapped, &owned_aad),
        )
        .await
    }

    /// Re-wraps a wrapped DEK under the current version of its master key; returns it with
    /// that version ([`KeyProvider::rewrap_data_key`]).
    pub(crate) async fn rewrap_data_key(&self, wrapped: &[u8], aad: &[u8]) -> Result<(Vec<u8>, Ocid)> {
        let (owned_wrapped, owned_aad) = (wrapped.to_vec(), aad.to_vec());
        self.run(
            self.placement_of(wrapped),
            "re-wrapping a data key",
            |p| p.rewrap_data_key(wrapped, aad),
            move |p| p.rewrap_data_key(&owned_wrapped, &owned_aad),
        )
        .await
    }

    /// The version new DEKs of `key_id` are wrapped by ([`KeyProvider::primary_version`]).
    pub(crate) async fn primary_version(&self, key_id: &Ocid) -> Result<Ocid> {
        Ok(self.key_status(key_id).await?.current_key_version)
    }

    /// The state of `key_id` and whether it can be used now ([`KeyProvider::key_status`]).
    pub(crate) async fn key_status(&self, key_id: &Ocid) -> Result<KeyStatus> {
        let key = key_id.clone();
        self.run(
            self.provider.placement(key_id),
            "asking for a master key's state",
            |p| p.key_status(key_id),
            move |p| p.key_status(&key),
        )
        .await
    }

    /// The state of one version of `key_id` ([`KeyProvider::key_version_state`]).
    pub(crate) async fn key_version_state(&self, key_id: &Ocid, key_version_id: &Ocid) -> Result<KeyVersionState> {
        let (key, version) = (key_id.clone(), key_version_id.clone());
        self.run_sync(
            self.provider.placement(key_id),
            "asking for a key version's state",
            move |p| p.key_version_state(&key, &version),
        )
        .await
    }

    /// Runs a call that providers only offer synchronously: inline when `placement` allows it
    /// and the provider is not one that waits on the network, otherwise on the blocking pool.
    async fn run_sync<T: Send + 'static>(
        &self,
        placement: Placement,
        action: &'static str,
        call: impl FnOnce(&dyn KeyProvider) -> kms_core::Result<T> + Send + 'static,
    ) -> Result<T> {
        let placement = if self.provider.as_async().is_some() {
            Placement::Blocking
        } else {
            placement
        };
        self.place(placement, action, call).await
    }

    /// Where a call on the key that `wrapped`'s header names runs; a header that does not
    /// parse goes where any call may (the provider rejects it, and may audit that).
    fn placement_of(&self, wrapped: &[u8]) -> Placement {
        ciphertext::parse(wrapped).map_or(Placement::Blocking, |ct| self.provider.placement(&ct.key_id))
    }

    /// Awaits `awaited` when the provider can be awaited; otherwise runs `call` inline or on
    /// the blocking pool, as `placement` says.
    async fn run<'s, T: Send + 'static>(
        &'s self,
        placement: Placement,
        action: &'static str,
        awaited: impl FnOnce(&'s dyn AsyncKeyProvider) -> KeyFuture<'s, T>,
        call: impl FnOnce(&dyn KeyProvider) -> kms_core::Result<T> + Send + 'static,
    ) -> Result<T> {
        if let Some(provider) = self.provider.as_async() {
            return Ok(awaited(provider).await?);
        }
        self.place(placement, action, call).await
    }

    /// Runs `call` inline or on the blocking pool, as `placement` says.
    async fn place<T: Send + 'static>(
        &self,
        placement: Placement,
        action: &'static str,
        call: impl FnOnce(&dyn KeyProvider) -> kms_core::Result<T> + Send + 'static,
    ) -> Result<T> {
        match placement {
            Placement::Inline => Ok(call(&*self.provider)?),
            Placement::Blocking => {
                let provider = self.provider.clone();
                tokio::task::spawn_blocking(move || call(&*provider))
                    .await
                    .map_err(|source| KeyServiceError::Interrupted { action, source })?
                    .map_err(KeyServiceError::Key)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;
    use std::thread::ThreadId;

    use kms_core::{KeyVersionState, Kms, KmsConfig, Principal};

    use super::*;

    /// The embedded KMS, noting the thread each call ran on.
    #[derive(Debug)]
    struct Recording {
        kms: Kms,
        threads: Mutex<Vec<ThreadId>>,
    }

    impl Recording {
        fn note(&self) {
            self.threads.lock().unwrap().push(std::thread::current().id());
        }

        fn take(&self) -> Vec<ThreadId> {
            std::mem::take(&mut self.threads.lock().unwrap())
        }
    }

    impl KeyProvider for Recording {
        fn generate_data_key(&self, key_id: &Ocid, aad: &[u8]) -> kms_core::Result<DataKey> {
            self.note();
            KeyProvider::generate_data_key(&self.kms, key_id, aad)
        }
        fn unwrap_data_key(&self, wrapped: &[u8], aad: &[u8]) -> kms_core::Result<Dek> {
            self.note();
            self.kms.unwrap_data_key(wrapped, aad)
        }
        fn rewrap_data_key(&self, wrapped: &[u8], aad: &[u8]) -> kms_core::Result<(Vec<u8>, Ocid)> {
            self.note();
            self.kms.rewrap_data_key(wrapped, aad)
        }
        fn key_status(&self, key_id: &Ocid) -> kms_core::Result<KeyStatus> {
            self.note();
            self.kms.key_status(key_id)
        }
        fn key_version_state(&self, key_id: &Ocid, key_version_id: &Ocid) -> kms_core::Result<KeyVersionState> {
            self.kms.key_version_state(key_id, key_version_id)
        }
        fn keys_named(&self, name: &str) -> kms_core::Result<Vec<Ocid>> {
            self.kms.keys_named(name)
        }
        fn placement(&self, key_id: &Ocid) -> Placement {
            self.kms.placement(key_id)
        }
    }

    /// Every call of the service once; the threads they ran on.
    async fn every_call(service: &KeyService, recording: &Recording, key_id: &Ocid) -> Vec<ThreadId> {
        let data_key = service.generate_data_key(key_id, b"aad").await.unwrap();
        let dek = service.unwrap_data_key(&data_key.wrapped, b"aad").await.unwrap();
        assert_eq!(dek.expose(), data_key.plaintext.unwrap().expose());
        let (_, version) = service.rewrap_data_key(&data_key.wrapped, b"aad").await.unwrap();
        assert_eq!(service.primary_version(key_id).await.unwrap(), version);
        assert!(service.key_status(key_id).await.unwrap().unusable.is_none());
        // A wrong binding is the provider's refusal, not an interruption.
        let refused = service.unwrap_data_key(&data_key.wrapped, b"other").await.unwrap_err();
        assert!(
            matches!(refused, KeyServiceError::Key(KmsError::InvalidCiphertext(_))),
            "{refused}"
        );
        recording.take()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn software_keys_run_inline_while_the_audit_writer_runs_and_on_the_blocking_pool_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let kms = Kms::open(KmsConfig::new(dir.path())).unwrap();
        let key = kms.ensure_defaults(&Principal::local_admin()).unwrap().key;
        let recording = Arc::new(Recording {
            kms,
            threads: Mutex::default(),
        });
        let service = KeyService::new(recording.clone());
        let here = std::thread::current().id();

        // No background audit writer: each call writes its audit entry itself.
        let threads = every_call(&service, &recording, &key.id).await;
        assert_eq!(threads.len(), 6);
        assert!(threads.iter().all(|t| *t != here), "{threads:?}");

        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (recording, stop) = (recording.clone(), stop.clone());
            std::thread::spawn(move || recording.kms.run_audit_writer(&stop))
        };
        while !recording.kms.audit_writer_running() {
            std::thread::yield_now();
        }
        let threads = every_call(&service, &recording, &key.id).await;
        assert_eq!(threads, vec![here; 6]);
        stop.store(true, Ordering::Release);
        recording.kms.wake_audit_writer();
        writer.join().unwrap().unwrap();
    }
}
