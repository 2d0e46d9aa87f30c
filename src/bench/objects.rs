//! Object workloads on any [`ObjectStore`]: PUT and GET of small and large objects from
//! concurrent clients, every request timed and every GET checked against what was put.
//! `sealstore bench object` runs them in-process on [`EncryptedStore`](crate::object::store::EncryptedStore)
//! beside plain local files; `sealstore bench s3` runs them over HTTP against S3 endpoints.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};

use super::load::{self, LoadResult};
use super::{size_label, Measured, Role, Unit};

/// Distinct small objects each client writes before it overwrites its first ones.
const SMALL_OBJECTS_PER_CLIENT: u64 = 4096;
/// Distinct large objects per client (bounds the disk space a run takes).
const LARGE_OBJECTS_PER_CLIENT: u64 = 2;

/// The sizes, client counts and duration of a run.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ObjectLoad {
    /// Size of the small objects (reported in operations per second).
    pub small_size: usize,
    /// Clients putting and getting small objects at once.
    pub small_clients: usize,
    /// Size of the large objects (reported in bytes per second).
    pub large_size: usize,
    /// Clients putting and getting large objects at once.
    pub large_clients: usize,
    /// How long each line runs (in each round), written as seconds.
    #[serde(rename = "secondsPerLine", serialize_with = "super::serialize_seconds")]
    pub duration: Duration,
    /// Rounds: every line runs once per round, the targets' order reversed every other
    /// round, so that no target always runs first or last (the machine's state drifts).
    pub rounds: usize,
}

/// A store under test.
pub(crate) struct Target {
    /// How results name it ("sealstore EncryptedStore", "http://127.0.0.1:9000").
    pub name: String,
    /// Whether the other targets are compared to this one.
    pub baseline: bool,
    /// What the target is (sealstore, a baseline, a peer).
    pub role: Role,
    /// The baseline this target is compared with (its name), when there are several.
    pub versus: Option<String>,
    /// The store; objects go under `bench/`.
    pub store: Arc<dyn ObjectStore>,
}

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ObjectBenchError {
    /// A request failed.
    #[error("{target}: {source}")]
    Store {
        /// The target's name.
        target: String,
        /// The failure.
        source: object_store::Error,
    },
    /// A GET returned other bytes than were put: the numbers would mean nothing.
    #[error("{target}: GET {location} returned {got} bytes that differ from the {expected} put")]
    WrongBytes {
        /// The target's name.
        target: String,
        /// The object.
        location: String,
        /// Bytes returned.
        got: usize,
        /// Bytes put.
        expected: usize,
    },
}

/// How many times [`run`] calls `progress` on `targets` targets: a PUT and a GET per size,
/// target and round.
pub(crate) fn steps(targets: usize, load: &ObjectLoad) -> u64 {
    (2 * 2 * targets * load.rounds.max(1)) as u64
}

/// Runs, for the small then the large size, PUT then GET on every target in turn (so that
/// the targets' lines of one workload are measured close together), `load.rounds` times with
/// the targets' order reversed every other round; calls `progress` with each line's
/// description before it runs. Each line's rate is over all its rounds, each round's kept.
pub(crate) async fn run(
    kind: &str,
    targets: &[Target],
    load: &ObjectLoad,
    mut progress: impl FnMut(&str),
) -> Result<Vec<Measured>, ObjectBenchError> {
    let mut results = Vec::new();
    let sizes = [
        (
            load.small_size,
            load.small_clients,
            SMALL_OBJECTS_PER_CLIENT,
            Unit::OpsPerSec,
            "small",
        ),
        (
            load.large_size,
            load.large_clients,
            LARGE_OBJECTS_PER_CLIENT,
            Unit::BytesPerSec,
            "large",
        ),
    ];
    let rounds = load.rounds.max(1);
    let rate = |r: &LoadResult, unit: Unit| r.measured(kind, "", "", unit, false, Role::Sealstore).value;
    for (size, clients, per_client, unit, prefix) in sizes {
        let data = random_bytes(size);
        let put_group = format!("PUT {} objects, {clients} clients", size_label(size));
        let get_group = format!("GET {} objects, {clients} clients", size_label(size));
        // Per target: (PUT, GET) over all rounds, and each round's rates.
        let mut runs: Vec<Option<(LoadResult, LoadResult)>> = targets.iter().map(|_| None).collect();
        let mut per_round: Vec<(Vec<f64>, Vec<f64>)> = targets.iter().map(|_| Default::default()).collect();
        for round in 0..rounds {
            let order: Vec<usize> = if round % 2 == 0 {
                (0..targets.len()).collect()
            } else {
                (0..targets.len()).rev().collect()
            };
            let of = if rounds > 1 {
                format!(" (round {} of {rounds})", round + 1)
            } else {
                String::new()
            };
            for i in order {
                let target = &targets[i];
                progress(&format!("{put_group}: {}{of}", target.name));
                super::settle();
                let put = put_objects(target, prefix, &data, clients, per_client, load.duration).await?;
                // GETs read back what this target's PUTs wrote: each client its own objects.
                let written: Vec<u64> = put.ops_per_client.iter().map(|n| (*n).min(per_client)).collect();
                progress(&format!("{get_group}: {}{of}", target.name));
                super::settle();
                let get = get_objects(target, prefix, &data, written, load.duration).await?;
                per_round[i].0.push(rate(&put, unit));
                per_round[i].1.push(rate(&get, unit));
                runs[i] = Some(match runs[i].take() {
                    None => (put, get),
                    Some((p, g)) => (p.combine(put), g.combine(get)),
                });
            }
        }
        let mut lines = |group: &str, pick: &dyn Fn(usize) -> (LoadResult, Vec<f64>)| {
            for (i, target) in targets.iter().enumerate() {
                let (result, each) = pick(i);
                let mut line = result.measured(kind, group, &target.name, unit, target.baseline, target.role);
                line.versus = target.versus.clone();
                if rounds > 1 {
                    line.rounds = each;
                }
                results.push(line);
            }
        };
        let done: Vec<(LoadResult, LoadResult)> = runs.into_iter().map(|r| r.expect("every target ran")).collect();
        lines(&put_group, &|i| (done[i].0.clone(), per_round[i].0.clone()));
        lines(&get_group, &|i| (done[i].1.clone(), per_round[i].1.clone()));
    }
    Ok(results)
}

fn location(prefix: &str, client: usize, n: u64) -> Path {
    Path::from(format!("bench/{prefix}/{client}/{n}"))
}

async fn put_objects(
    target: &Target,
    prefix: &'static str,
    data: &Bytes,
    clients: usize,
    per_client: u64,
    duration: Duration,
) -> Result<LoadResult, ObjectBenchError> {
    let (store, data) = (target.store.clone(), data.clone());
    load::run_async(clients, duration, move |client, seq| {
        let (store, data) = (store.clone(), data.clone());
        async move {
            let len = data.len() as u64;
            store
                .put(
                    &location(prefix, client, seq % per_client),
                    PutPayload::from_bytes(data),
                )
                .await?;
            Ok(len)
        }
    })
    .await
    .map_err(|source| ObjectBenchError::Store {
        target: target.name.clone(),
        source,
    })
}

async fn get_objects(
    target: &Target,
    prefix: &'static str,
    data: &Bytes,
    written: Vec<u64>,
    duration: Duration,
) -> Result<LoadResult, ObjectBenchError> {
    let (store, data, name) = (target.store.clone(), data.clone(), target.name.clone());
    let written = Arc::new(written);
    load::run_async(written.len(), duration, move |client, seq| {
        let (store, data, name, written) = (store.clone(), data.clone(), name.clone(), written.clone());
        async move {
            let at = location(prefix, client, seq % written[client].max(1));
            let fetched = async { store.get(&at).await?.bytes().await }.await;
            let got = fetched.map_err(|source| ObjectBenchError::Store {
                target: name.clone(),
                source,
            })?;
            if got != data {
                return Err(ObjectBenchError::WrongBytes {
                    target: name,
                    location: at.to_string(),
                    got: got.len(),
                    expected: data.len(),
                });
            }
            Ok(got.len() as u64)
        }
    })
    .await
}

/// `len` random bytes (incompressible, so no layer can shortcut them).
pub(crate) fn random_bytes(len: usize) -> Bytes {
    let mut data = vec![0u8; len];
    aws_lc_rs::rand::fill(&mut data).expect("the system's random source");
    Bytes::from(data)
}

/// Where and as whom `sealstore bench s3` sends its requests.
#[derive(Debug, Clone)]
pub(crate) struct S3Endpoint {
    /// `http://host:port` (path-style requests).
    pub url: String,
    /// Access key id.
    pub access_key: String,
    /// Secret access key.
    pub secret_key: String,
    /// An existing bucket the objects go into (under `bench/`).
    pub bucket: String,
    /// Region the signatures name.
    pub region: String,
}

/// An S3 client for `endpoint`: SigV4-signed path-style requests over a keep-alive
/// connection pool, no retries (a failed request fails the run), unsigned payloads (as
/// clients sending over TLS do: the server is measured, not the client's SHA-256). A
/// [`Role::Baseline`] target is the one the others are compared with.
pub(crate) fn s3_target(endpoint: &S3Endpoint, role: Role) -> Result<Target, object_store::Error> {
    let options = object_store::ClientOptions::new()
        .with_allow_http(true)
        .with_timeout(Duration::from_secs(300))
        .with_pool_max_idle_per_host(256);
    let store = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(&endpoint.url)
        .with_bucket_name(&endpoint.bucket)
        .with_region(&endpoint.region)
        .with_access_key_id(&endpoint.access_key)
        .with_secret_access_key(&endpoint.secret_key)
        .with_virtual_hosted_style_request(false)
        .with_unsigned_payload(true)
        .with_retry(object_store::RetryConfig {
            max_retries: 0,
            ..Default::default()
        })
        .with_client_options(options)
        .build()?;
    Ok(Target {
        name: endpoint.url.clone(),
        baseline: role == Role::Baseline,
        role,
        versus: None,
        store: Arc::new(store),
    })
}
