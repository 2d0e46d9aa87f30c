//! ListObjects, ListObjectsV2 and ListObjectVersions, served from the object index.

use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result};

use super::*;

pub(super) async fn list_objects(
    face: &S3Face,
    req: S3Request<ListObjectsInput>,
) -> S3Result<S3Response<ListObjectsOutput>> {
    let marker = req.input.marker.as_deref();
    let (listing, page, output) = list_objects_page::<_, ListObjectsOutput>(face, &req, Version::V1 { marker })?;
    Ok(S3Response::new(ListObjectsOutput {
        marker: marker.map(|v| listing.enc(v)),
        next_marker: page.next_start_after.as_deref().map(|m| listing.enc(m)),
        ..output
    }))
}

pub(super) async fn list_objects_v2(
    face: &S3Face,
    req: S3Request<ListObjectsV2Input>,
) -> S3Result<S3Response<ListObjectsV2Output>> {
    let input = &req.input;
    let version = Version::V2 {
        continuation_token: input.continuation_token.as_deref(),
        start_after: input.start_after.as_deref(),
        fetch_owner: input.fetch_owner,
    };
    let (listing, page, output) = list_objects_page::<_, ListObjectsV2Output>(face, &req, version)?;
    Ok(S3Response::new(ListObjectsV2Output {
        key_count: Some((page.objects.len() + page.common_prefixes.len()) as i32),
        continuation_token: input.continuation_token.clone(),
        next_continuation_token: page
            .next_start_after
            .as_ref()
            .map(|n| data_encoding::BASE64URL_NOPAD.encode(n.as_bytes())),
        start_after: input.start_after.as_deref().map(|v| listing.enc(v)),
        ..output
    }))
}

/// What ListObjects (V1) and ListObjectsV2 differ in: where a page starts, and whether its
/// objects name their owner.
enum Version<'a> {
    /// V1: after `marker`; owners always, as AWS does.
    V1 { marker: Option<&'a str> },
    /// V2: after the key a continuation token names, else after `start-after`; owners only
    /// when asked for (`fetch-owner=true`).
    V2 {
        continuation_token: Option<&'a str>,
        start_after: Option<&'a str>,
        fetch_owner: Option<bool>,
    },
}

impl Version<'_> {
    /// The key (or common prefix) the page starts after.
    fn after(&self) -> S3Result<Option<String>> {
        match self {
            Version::V1 { marker } => Ok(marker.map(str::to_owned)),
            // Continuation tokens are the last key (or common prefix) returned, base64url-encoded.
            Version::V2 {
                continuation_token: Some(token),
                ..
            } => Ok(Some(
                data_encoding::BASE64URL_NOPAD
                    .decode(token.as_bytes())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| s3_error!(InvalidArgument, "the continuation token is not valid"))?,
            )),
            Version::V2 { start_after, .. } => Ok(start_after.map(str::to_owned)),
        }
    }

    /// Whether the page's objects name their owner.
    fn names_owner(&self) -> bool {
        matches!(
            self,
            Version::V1 { .. }
                | Version::V2 {
                    fetch_owner: Some(true),
                    ..
                }
        )
    }
}

/// ListObjects and ListObjectsV2, as one: the page `version` asks for, and the output with
/// the fields both versions answer alike (the caller adds its version's own).
fn list_objects_page<I: ListInput, O: ObjectsOutput>(
    face: &S3Face,
    req: &S3Request<I>,
    version: Version<'_>,
) -> S3Result<(Listing, ListPage, O)> {
    let listing = Listing::new(&face.objects, &req.input)?;
    let page = listing.page(&face.objects, version.after()?.as_deref())?;
    let owner = if version.names_owner() {
        face.owner(req.credentials.as_ref())
    } else {
        None
    };
    let output = O::listed(&listing, &page, owner.as_ref());
    Ok((listing, page, output))
}

/// ListObjects and ListObjectsV2 outputs.
trait ObjectsOutput {
    /// The fields both versions answer alike.
    fn listed(listing: &Listing, page: &ListPage, owner: Option<&Owner>) -> Self;
}

macro_rules! objects_output {
    ($($output:ty),*) => {$(
        impl ObjectsOutput for $output {
            fn listed(listing: &Listing, page: &ListPage, owner: Option<&Owner>) -> Self {
                Self {
                    name: Some(listing.bucket.clone()),
                    prefix: Some(listing.enc(&listing.prefix)),
                    delimiter: listing.given_delimiter.as_deref().map(|v| listing.enc(v)),
                    max_keys: Some(listing.max_keys as i32),
                    is_truncated: Some(page.next_start_after.is_some()),
                    contents: Some(listing.objects(page, owner)),
                    common_prefixes: listing.common_prefixes(page),
                    encoding_type: listing.encoding_type.clone(),
                    ..Default::default()
                }
            }
        }
    )*};
}
objects_output!(ListObjectsOutput, ListObjectsV2Output);

/// Buckets are unversioned: every object is its own latest version, `null`. Tools that
/// clean up through this call (and not ListObjects) work.
pub(super) async fn list_object_versions(
    face: &S3Face,
    req: S3Request<ListObjectVersionsInput>,
) -> S3Result<S3Response<ListObjectVersionsOutput>> {
    let input = &req.input;
    let listing = Listing::new(&face.objects, input)?;
    let page = listing.page(&face.objects, input.key_marker.as_deref())?;
    let owner = face.owner(req.credentials.as_ref());
    let versions = page
        .objects
        .iter()
        .map(|(key, e)| ObjectVersion {
            key: Some(listing.enc(key)),
            version_id: Some("null".into()),
            is_latest: Some(true),
            size: Some(e.size as i64),
            e_tag: Some(etag(&e.etag)),
            last_modified: Some(timestamp(e.last_modified)),
            storage_class: Some(ObjectVersionStorageClass::from_static(
                ObjectVersionStorageClass::STANDARD,
            )),
            owner: owner.clone(),
            ..Default::default()
        })
        .collect();
    Ok(S3Response::new(ListObjectVersionsOutput {
        name: Some(input.bucket.clone()),
        prefix: Some(listing.enc(&listing.prefix)),
        delimiter: listing.given_delimiter.as_deref().map(|v| listing.enc(v)),
        key_marker: input.key_marker.as_deref().map(|v| listing.enc(v)),
        max_keys: Some(listing.max_keys as i32),
        is_truncated: Some(page.next_start_after.is_some()),
        next_key_marker: page.next_start_after.as_deref().map(|m| listing.enc(m)),
        next_version_id_marker: page.next_start_after.as_ref().map(|_| "null".into()),
        versions: Some(versions),
        common_prefixes: listing.common_prefixes(&page),
        encoding_type: listing.encoding_type.clone(),
        ..Default::default()
    }))
}

/// The inputs of ListObjects, ListObjectsV2 and ListObjectVersions.
trait ListInput {
    /// Bucket, prefix, delimiter, encoding type and max keys.
    fn list_params(
        &self,
    ) -> (
        &str,
        &Option<String>,
        &Option<String>,
        &Option<EncodingType>,
        Option<i32>,
    );
}

macro_rules! list_input {
    ($($input:ty),*) => {$(
        impl ListInput for $input {
            fn list_params(&self) -> (&str, &Option<String>, &Option<String>, &Option<EncodingType>, Option<i32>) {
                (&self.bucket, &self.prefix, &self.delimiter, &self.encoding_type, self.max_keys)
            }
        }
    )*};
}
list_input!(ListObjectsInput, ListObjectsV2Input, ListObjectVersionsInput);

/// What ListObjects, ListObjectsV2 and ListObjectVersions share: parameters, the index
/// page, and the mapping of keys (URL-encoded when the client asks for it).
struct Listing {
    bucket: String,
    prefix: String,
    delimiter: Option<String>,
    /// The delimiter as the request gave it (echoed, even when empty).
    given_delimiter: Option<String>,
    encoding_type: Option<EncodingType>,
    url: bool,
    max_keys: usize,
}

impl Listing {
    fn new(objects: &ObjectService, input: &impl ListInput) -> S3Result<Listing> {
        let (bucket, prefix, delimiter, encoding, max_keys) = input.list_params();
        objects.require_bucket(bucket).map_err(s3_err)?;
        Ok(Listing {
            bucket: bucket.to_owned(),
            prefix: prefix.clone().unwrap_or_default(),
            delimiter: delimiter.clone().filter(|d| !d.is_empty()),
            given_delimiter: delimiter.clone(),
            encoding_type: encoding.clone(),
            url: encoding.as_ref().is_some_and(|e| e.as_str() == EncodingType::URL),
            max_keys: max_keys.unwrap_or(1000).clamp(0, 1000) as usize,
        })
    }

    fn page(&self, objects: &ObjectService, after: Option<&str>) -> S3Result<ListPage> {
        objects
            .index()
            .list(
                &self.bucket,
                &self.prefix,
                self.delimiter.as_deref(),
                after,
                self.max_keys,
            )
            .map_err(|e| s3_err(e.into()))
    }

    fn enc(&self, s: &str) -> String {
        if self.url {
            urlencoding_path(s)
        } else {
            s.to_owned()
        }
    }

    fn objects(&self, page: &ListPage, owner: Option<&Owner>) -> Vec<Object> {
        page.objects
            .iter()
            .map(|(key, e)| Object {
                key: Some(self.enc(key)),
                size: Some(e.size as i64),
                e_tag: Some(etag(&e.etag)),
                last_modified: Some(timestamp(e.last_modified)),
                storage_class: Some(ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)),
                owner: owner.cloned(),
                ..Default::default()
            })
            .collect()
    }

    fn common_prefixes(&self, page: &ListPage) -> Option<Vec<CommonPrefix>> {
        let prefixes: Vec<CommonPrefix> = page
            .common_prefixes
            .iter()
            .map(|p| CommonPrefix {
                prefix: Some(self.enc(p)),
            })
            .collect();
        (!prefixes.is_empty()).then_some(prefixes)
    }
}

/// Percent-encodes a key as S3 does for `encoding-type=url` (everything but unreserved
/// characters and '/').
pub(super) fn urlencoding_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
