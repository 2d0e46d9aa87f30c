//! ListObjects, ListObjectsV2 and ListObjectVersions, served from the object index.

use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result};

use super::*;

pub(super) async fn list_objects(
    face: &S3Face,
    req: S3Request<ListObjectsInput>,
) -> S3Result<S3Response<ListObjectsOutput>> {
    let input = req.input;
    let listing = Listing::new(
        &face.objects,
        &input.bucket,
        &input.prefix,
        &input.delimiter,
        &input.encoding_type,
        input.max_keys,
    )?;
    let page = listing.page(&face.objects, input.marker.as_deref())?;
    // ListObjects (V1) always names each object's owner, as AWS does.
    let owner = face.owner(req.credentials.as_ref());
    Ok(S3Response::new(ListObjectsOutput {
        name: Some(input.bucket.clone()),
        prefix: Some(listing.enc(&listing.prefix)),
        marker: input.marker.as_deref().map(|v| listing.enc(v)),
        delimiter: input.delimiter.as_deref().map(|v| listing.enc(v)),
        max_keys: Some(listing.max_keys as i32),
        is_truncated: Some(page.next_start_after.is_some()),
        next_marker: page.next_start_after.as_deref().map(|m| listing.enc(m)),
        contents: Some(listing.objects(&page, owner.as_ref())),
        common_prefixes: listing.common_prefixes(&page),
        encoding_type: input.encoding_type.clone(),
        ..Default::default()
    }))
}

/// Buckets are unversioned: every object is its own latest version, `null`. Tools that
/// clean up through this call (and not ListObjects) work.
pub(super) async fn list_object_versions(
    face: &S3Face,
    req: S3Request<ListObjectVersionsInput>,
) -> S3Result<S3Response<ListObjectVersionsOutput>> {
    let input = req.input;
    let listing = Listing::new(
        &face.objects,
        &input.bucket,
        &input.prefix,
        &input.delimiter,
        &input.encoding_type,
        input.max_keys,
    )?;
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
        delimiter: input.delimiter.as_deref().map(|v| listing.enc(v)),
        key_marker: input.key_marker.as_deref().map(|v| listing.enc(v)),
        max_keys: Some(listing.max_keys as i32),
        is_truncated: Some(page.next_start_after.is_some()),
        next_key_marker: page.next_start_after.as_deref().map(|m| listing.enc(m)),
        next_version_id_marker: page.next_start_after.as_ref().map(|_| "null".into()),
        versions: Some(versions),
        common_prefixes: listing.common_prefixes(&page),
        encoding_type: input.encoding_type.clone(),
        ..Default::default()
    }))
}

pub(super) async fn list_objects_v2(
    face: &S3Face,
    req: S3Request<ListObjectsV2Input>,
) -> S3Result<S3Response<ListObjectsV2Output>> {
    let input = req.input;
    let listing = Listing::new(
        &face.objects,
        &input.bucket,
        &input.prefix,
        &input.delimiter,
        &input.encoding_type,
        input.max_keys,
    )?;
    // Continuation tokens are the last key (or common prefix) returned, base64url-encoded.
    let after = match &input.continuation_token {
        Some(token) => Some(
            data_encoding::BASE64URL_NOPAD
                .decode(token.as_bytes())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| s3_error!(InvalidArgument, "the continuation token is not valid"))?,
        ),
        None => input.start_after.clone(),
    };
    let page = listing.page(&face.objects, after.as_deref())?;
    // V2 names owners only when asked to (`fetch-owner=true`).
    let owner = match input.fetch_owner {
        Some(true) => face.owner(req.credentials.as_ref()),
        _ => None,
    };
    Ok(S3Response::new(ListObjectsV2Output {
        name: Some(input.bucket.clone()),
        prefix: Some(listing.enc(&listing.prefix)),
        delimiter: input.delimiter.as_deref().map(|v| listing.enc(v)),
        max_keys: Some(listing.max_keys as i32),
        key_count: Some((page.objects.len() + page.common_prefixes.len()) as i32),
        is_truncated: Some(page.next_start_after.is_some()),
        continuation_token: input.continuation_token.clone(),
        next_continuation_token: page
            .next_start_after
            .as_ref()
            .map(|n| data_encoding::BASE64URL_NOPAD.encode(n.as_bytes())),
        start_after: input.start_after.as_deref().map(|v| listing.enc(v)),
        contents: Some(listing.objects(&page, owner.as_ref())),
        common_prefixes: listing.common_prefixes(&page),
        encoding_type: input.encoding_type.clone(),
        ..Default::default()
    }))
}

/// What ListObjects, ListObjectsV2 and ListObjectVersions share: parameters, the index
/// page, and the mapping of keys (URL-encoded when the client asks for it).
struct Listing {
    bucket: String,
    prefix: String,
    delimiter: Option<String>,
    url: bool,
    max_keys: usize,
}

impl Listing {
    fn new(
        objects: &ObjectService,
        bucket: &str,
        prefix: &Option<String>,
        delimiter: &Option<String>,
        encoding: &Option<EncodingType>,
        max_keys: Option<i32>,
    ) -> S3Result<Listing> {
        objects.require_bucket(bucket).map_err(s3_err)?;
        Ok(Listing {
            bucket: bucket.to_owned(),
            prefix: prefix.clone().unwrap_or_default(),
            delimiter: delimiter.clone().filter(|d| !d.is_empty()),
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
