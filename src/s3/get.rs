//! GetObject (ranges) and HeadObject.

use futures::StreamExt;
use s3s::dto::*;
use s3s::{s3_error, S3Error, S3Request, S3Response, S3Result};

use super::sse::{request_customer_key, SseCustomer, SseHeaders, SseOutput};
use super::*;

pub(super) async fn get_object(face: &S3Face, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
    refuse_sse_headers(&req.headers)?;
    let customer = request_customer_key(face, &req)?;
    let input = req.input;
    let object = open(face, &input.bucket, &input.key, customer.as_ref()).await?;
    let entry = &object.entry;
    check_conditions(
        entry,
        &input.if_match,
        &input.if_none_match,
        &input.if_modified_since,
        &input.if_unmodified_since,
    )?;
    let range = requested_range(entry, input.part_number, input.range.as_ref())?;
    let got = object
        .read(range.as_ref().map(|(r, _, _)| r.clone()))
        .await
        .map_err(s3_err)?;
    let length = got.range.end - got.range.start;
    let sse = SseHeaders::of_object(&entry.encryption, customer.as_ref());
    // The first chunk is awaited before answering: damage in the header or in the first
    // batch of segments of the range becomes an error answer, not a 200 cut short.
    let mut source = got.into_stream();
    let first = match source.next().await {
        Some(Err(e)) => return Err(s3_err(e.into())),
        first => first,
    };
    // s3s wants a Sync body; object_store streams are only Send. A small channel bridges
    // them (two chunks in flight keeps memory bounded).
    let (mut tx, rx) = futures::channel::mpsc::channel::<Result<bytes::Bytes, object_store::Error>>(2);
    let task = async move {
        use futures::SinkExt;
        let mut chunks = futures::stream::iter(first).chain(source);
        while let Some(chunk) = chunks.next().await {
            if let Err(e) = &chunk {
                // The answer has started: all that is left is to cut the body short.
                log_body_failure(e);
            }
            let failed = chunk.is_err();
            if tx.send(chunk).await.is_err() || failed {
                break; // the client went away, or the body ends here
            }
        }
    };
    tokio::spawn(tracing::Instrument::in_current_span(task));
    let output = GetObjectOutput {
        body: Some(StreamingBlob::wrap(rx)),
        content_length: Some(length as i64),
        content_range: range
            .as_ref()
            .map(|(_, first, last)| format!("bytes {first}-{last}/{}", entry.size)),
        accept_ranges: Some("bytes".into()),
        parts_count: parts_count(entry, input.part_number),
        e_tag: Some(etag(&entry.etag)),
        last_modified: Some(timestamp(entry.last_modified)),
        metadata: (!entry.user_metadata.is_empty()).then(|| entry.user_metadata.clone().into_iter().collect()),
        ..Default::default()
    }
    .with_sse(sse)
    .with_representation(Representation::of(entry, &input));
    let mut response = S3Response::new(output);
    if range.is_some() {
        response.status = Some(http::StatusCode::PARTIAL_CONTENT);
    }
    Ok(response)
}

pub(super) async fn head_object(
    face: &S3Face,
    req: S3Request<HeadObjectInput>,
) -> S3Result<S3Response<HeadObjectOutput>> {
    refuse_sse_headers(&req.headers)?;
    let customer = request_customer_key(face, &req)?;
    let input = &req.input;
    let object = open(face, &input.bucket, &input.key, customer.as_ref()).await?;
    let entry = &object.entry;
    check_conditions(
        entry,
        &input.if_match,
        &input.if_none_match,
        &input.if_modified_since,
        &input.if_unmodified_since,
    )?;
    let range = requested_range(entry, input.part_number, input.range.as_ref())?;
    let sse = SseHeaders::of_object(&entry.encryption, customer.as_ref());
    let output = HeadObjectOutput {
        content_length: Some(range.as_ref().map_or(entry.size, |(_, first, last)| last + 1 - first) as i64),
        content_range: range
            .as_ref()
            .map(|(_, first, last)| format!("bytes {first}-{last}/{}", entry.size)),
        parts_count: parts_count(entry, input.part_number),
        e_tag: Some(etag(&entry.etag)),
        last_modified: Some(timestamp(entry.last_modified)),
        accept_ranges: Some("bytes".into()),
        metadata: (!entry.user_metadata.is_empty()).then(|| entry.user_metadata.clone().into_iter().collect()),
        ..Default::default()
    }
    .with_sse(sse)
    .with_representation(Representation::of(entry, input));
    let mut response = S3Response::new(output);
    if range.is_some() {
        response.extensions.insert(super::service::PartialContent);
    }
    Ok(response)
}

/// The headers that describe an object's content (stored with it), as a read answers them:
/// each `response-*` parameter of the request overrides its stored header.
struct Representation {
    content_type: Option<String>,
    cache_control: Option<String>,
    content_disposition: Option<String>,
    content_encoding: Option<String>,
    content_language: Option<String>,
    expires: Option<Timestamp>,
}

/// A read's `response-*` parameters.
trait ReadOverrides {
    fn overrides(&self) -> Representation;
}

/// A read's answer, which carries the representation headers.
trait Represented {
    fn with_representation(self, r: Representation) -> Self;
}

macro_rules! representation {
    ($(($input:ty, $output:ty)),*) => {$(
        impl ReadOverrides for $input {
            fn overrides(&self) -> Representation {
                Representation {
                    content_type: self.response_content_type.clone(),
                    cache_control: self.response_cache_control.clone(),
                    content_disposition: self.response_content_disposition.clone(),
                    content_encoding: self.response_content_encoding.clone(),
                    content_language: self.response_content_language.clone(),
                    expires: self.response_expires.clone(),
                }
            }
        }
        impl Represented for $output {
            fn with_representation(self, r: Representation) -> Self {
                Self {
                    content_type: r.content_type,
                    cache_control: r.cache_control,
                    content_disposition: r.content_disposition,
                    content_encoding: r.content_encoding,
                    content_language: r.content_language,
                    expires: r.expires,
                    ..self
                }
            }
        }
    )*};
}
representation!((GetObjectInput, GetObjectOutput), (HeadObjectInput, HeadObjectOutput));

impl Representation {
    fn of(entry: &ObjectEntry, request: &impl ReadOverrides) -> Representation {
        let o = request.overrides();
        let h = &entry.headers;
        Representation {
            content_type: o.content_type.or_else(|| entry.content_type.clone()),
            cache_control: o.cache_control.or_else(|| h.cache_control.clone()),
            content_disposition: o.content_disposition.or_else(|| h.content_disposition.clone()),
            content_encoding: o.content_encoding.or_else(|| h.content_encoding.clone()),
            content_language: o.content_language.or_else(|| h.content_language.clone()),
            expires: o.expires.or_else(|| stored_expires(h)),
        }
    }
}

/// `x-amz-mp-parts-count`: on reads of one part of an object written by a multipart upload.
fn parts_count(entry: &ObjectEntry, part_number: Option<i32>) -> Option<i32> {
    (part_number.is_some() && !entry.parts.is_empty()).then_some(entry.parts.len() as i32)
}

/// The plaintext range a read asks for: a `Range` header, or `?partNumber=N` (the bytes of
/// part N of a multipart upload's object; part 1 of any other object is all of it).
fn requested_range(
    entry: &ObjectEntry,
    part_number: Option<i32>,
    range: Option<&Range>,
) -> S3Result<Option<(GetRange, u64, u64)>> {
    let Some(n) = part_number else {
        return range.map(|r| byte_range(r, entry.size)).transpose();
    };
    if range.is_some() {
        return Err(s3_error!(
            InvalidRequest,
            "Cannot specify both Range header and partNumber query parameter"
        ));
    }
    if !(1..=10_000).contains(&n) {
        return Err(s3_error!(
            InvalidArgument,
            "Part number must be an integer between 1 and 10000, inclusive"
        ));
    }
    let sizes: &[u64] = if entry.parts.is_empty() {
        std::slice::from_ref(&entry.size)
    } else {
        &entry.parts
    };
    let index = n as usize - 1;
    let Some(&size) = sizes.get(index) else {
        let mut e = S3Error::with_message(
            S3ErrorCode::Custom("InvalidPartNumber".into()),
            format!(
                "The requested partnumber is not satisfiable: the object has {} part(s)",
                sizes.len()
            ),
        );
        e.set_status_code(http::StatusCode::RANGE_NOT_SATISFIABLE);
        return Err(e);
    };
    if size == 0 {
        // An empty object (or part): nothing to put in a Content-Range.
        return Ok(None);
    }
    let first: u64 = sizes[..index].iter().sum();
    let last = first + size - 1;
    Ok(Some((GetRange::Bounded(first..last + 1), first, last)))
}

/// GET and HEAD take no `x-amz-server-side-encryption` (nor KMS key id): the object says how
/// it is encrypted. AWS refuses them with 400 `InvalidArgument`, and so does this server.
fn refuse_sse_headers(headers: &http::HeaderMap) -> S3Result<()> {
    for name in [
        "x-amz-server-side-encryption",
        "x-amz-server-side-encryption-aws-kms-key-id",
    ] {
        if headers.contains_key(name) {
            return Err(s3_error!(
                InvalidArgument,
                "{name} header is not supported for this operation."
            ));
        }
    }
    Ok(())
}

/// The plaintext range of a `Range` header over an object of `size` bytes, or `InvalidRange`.
fn byte_range(range: &Range, size: u64) -> S3Result<(GetRange, u64, u64)> {
    let (first, last) = match *range {
        Range::Int { first, last } => (
            first,
            last.map_or(size.saturating_sub(1), |l| l.min(size.saturating_sub(1))),
        ),
        Range::Suffix { length } => (size.saturating_sub(length), size.saturating_sub(1)),
    };
    if size == 0 || first >= size || first > last {
        return Err(s3_error!(
            InvalidRange,
            "the range is not satisfiable for an object of {size} bytes"
        ));
    }
    Ok((GetRange::Bounded(first..last + 1), first, last))
}

/// The object, once the request has shown it may read it (the right customer key, a usable
/// master key).
async fn open(face: &S3Face, bucket: &str, key: &str, customer: Option<&SseCustomer>) -> S3Result<OpenObject> {
    face.objects
        .open_for_read(bucket, key, customer.map(|c| &c.key))
        .await
        .map_err(s3_err)
}

fn epoch_seconds(t: &Timestamp) -> S3Result<i64> {
    let mut text = Vec::new();
    t.format(TimestampFormat::EpochSeconds, &mut text)
        .map_err(|_| s3_error!(InvalidArgument, "a date in the request cannot be read"))?;
    String::from_utf8_lossy(&text)
        .split('.')
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| s3_error!(InvalidArgument, "a date in the request cannot be read"))
}

fn etag_matches(condition: &ETagCondition, entry: &ObjectEntry) -> bool {
    match condition {
        ETagCondition::Any => true,
        ETagCondition::ETag(tag) => tag.value() == entry.etag,
    }
}

/// The `x-amz-copy-source-if-*` conditions of a copy: as [`check_conditions`], except that
/// every failed condition is a 412, as S3 answers.
pub(super) fn check_copy_source_conditions(
    entry: &ObjectEntry,
    if_match: &Option<ETagCondition>,
    if_none_match: &Option<ETagCondition>,
    if_modified_since: &Option<Timestamp>,
    if_unmodified_since: &Option<Timestamp>,
) -> S3Result<()> {
    check_conditions(entry, if_match, if_none_match, if_modified_since, if_unmodified_since).map_err(|e| {
        if *e.code() == S3ErrorCode::NotModified {
            s3_error!(
                PreconditionFailed,
                "the copy source does not meet the copy-source conditions"
            )
        } else {
            e
        }
    })
}

/// Conditional requests as RFC 9110 orders them: If-Match, then If-Unmodified-Since
/// (when there is no If-Match) fail with 412; If-None-Match, then If-Modified-Since (when
/// there is no If-None-Match) answer 304. HTTP dates have whole seconds, so times compare
/// at that precision.
fn check_conditions(
    entry: &ObjectEntry,
    if_match: &Option<ETagCondition>,
    if_none_match: &Option<ETagCondition>,
    if_modified_since: &Option<Timestamp>,
    if_unmodified_since: &Option<Timestamp>,
) -> S3Result<()> {
    let modified = entry.last_modified.timestamp();
    match if_match {
        Some(c) if !etag_matches(c, entry) => {
            return Err(s3_error!(
                PreconditionFailed,
                "the object's ETag does not match If-Match"
            ));
        }
        Some(_) => {}
        None => {
            if let Some(since) = if_unmodified_since {
                if modified > epoch_seconds(since)? {
                    return Err(s3_error!(
                        PreconditionFailed,
                        "the object was modified after If-Unmodified-Since"
                    ));
                }
            }
        }
    }
    let not_modified = match if_none_match {
        Some(c) => etag_matches(c, entry),
        None => match if_modified_since {
            Some(since) => modified <= epoch_seconds(since)?,
            None => false,
        },
    };
    if not_modified {
        return Err(not_modified_error(entry));
    }
    Ok(())
}

/// 304 Not Modified, with the `ETag` and `Last-Modified` of the object (RFC 9110 wants the
/// validators a 200 would have carried).
fn not_modified_error(entry: &ObjectEntry) -> S3Error {
    let mut e = s3_error!(NotModified);
    let mut headers = http::HeaderMap::new();
    if let Ok(v) = http::HeaderValue::from_str(&format!("\"{}\"", entry.etag)) {
        headers.insert(http::header::ETAG, v);
    }
    if let Some(v) = http_date(&timestamp(entry.last_modified)).and_then(|d| http::HeaderValue::from_str(&d).ok()) {
        headers.insert(http::header::LAST_MODIFIED, v);
    }
    e.set_headers(headers);
    e
}
