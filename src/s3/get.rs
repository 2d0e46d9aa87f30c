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
    let object = open(face, &input.bucket, &input.key, customer.as_ref())?;
    let entry = &object.entry;
    check_conditions(
        entry,
        &input.if_match,
        &input.if_none_match,
        &input.if_modified_since,
        &input.if_unmodified_since,
    )?;
    let range = input.range.as_ref().map(|r| byte_range(r, entry.size)).transpose()?;
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
                match IntegrityError::find(e) {
                    Some(damage) => log_damage(damage),
                    None => tracing::error!(error = %e, "reading an object failed after its answer started"),
                }
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
        content_type: entry.content_type.clone(),
        e_tag: Some(etag(&entry.etag)),
        last_modified: Some(timestamp(entry.last_modified)),
        metadata: (!entry.user_metadata.is_empty()).then(|| entry.user_metadata.clone().into_iter().collect()),
        ..Default::default()
    }
    .with_sse(sse);
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
    let object = open(face, &input.bucket, &input.key, customer.as_ref())?;
    let entry = &object.entry;
    check_conditions(
        entry,
        &input.if_match,
        &input.if_none_match,
        &input.if_modified_since,
        &input.if_unmodified_since,
    )?;
    // The header is read and authenticated (with the first segment, which comes with it),
    // so that a damaged object answers HEAD as it answers GET.
    let probe = (entry.size > 0).then_some(GetRange::Bounded(0..1));
    let mut first = object.read(probe).await.map_err(s3_err)?.into_stream();
    if let Some(Err(e)) = first.next().await {
        return Err(s3_err(e.into()));
    }
    let sse = SseHeaders::of_object(&entry.encryption, customer.as_ref());
    Ok(S3Response::new(
        HeadObjectOutput {
            content_length: Some(entry.size as i64),
            content_type: entry.content_type.clone(),
            e_tag: Some(etag(&entry.etag)),
            last_modified: Some(timestamp(entry.last_modified)),
            accept_ranges: Some("bytes".into()),
            metadata: (!entry.user_metadata.is_empty()).then(|| entry.user_metadata.clone().into_iter().collect()),
            ..Default::default()
        }
        .with_sse(sse),
    ))
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
fn open(face: &S3Face, bucket: &str, key: &str, customer: Option<&SseCustomer>) -> S3Result<OpenObject> {
    face.objects
        .open_for_read(bucket, key, customer.map(|c| &c.key))
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
    let mut date = Vec::new();
    if timestamp(entry.last_modified)
        .format(TimestampFormat::HttpDate, &mut date)
        .is_ok()
    {
        if let Ok(v) = http::HeaderValue::from_bytes(&date) {
            headers.insert(http::header::LAST_MODIFIED, v);
        }
    }
    e.set_headers(headers);
    e
}
