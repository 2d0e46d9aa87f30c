//! Multipart uploads.

use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result};

use super::sse::{request_customer_key, SseCustomer, SseHeaders, SseOutput};
use super::*;

/// Smallest part S3 accepts, except for the last one.
pub(super) const MIN_PART_SIZE: u64 = 5 << 20;

pub(super) async fn create_multipart_upload(
    face: &S3Face,
    req: S3Request<CreateMultipartUploadInput>,
) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
    let customer = request_customer_key(face, &req)?;
    let input = req.input;
    let params = input.put_params(face, customer.as_ref(), None, None)?;
    let (upload_id, encryption) = face
        .objects
        .create_upload(&input.bucket, &input.key, params)
        .await
        .map_err(s3_err)?;
    let sse = SseHeaders::of_upload(&encryption, customer.as_ref());
    Ok(S3Response::new(
        CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(upload_id),
            ..Default::default()
        }
        .with_sse(sse),
    ))
}

pub(super) async fn upload_part(
    face: &S3Face,
    req: S3Request<UploadPartInput>,
) -> S3Result<S3Response<UploadPartOutput>> {
    let customer = request_customer_key(face, &req)?;
    let input = req.input;
    let expected_md5 = content_md5(&input.content_md5)?;
    let body = super::checksum::checked_body(input.body, &req.headers, req.trailing_headers.as_ref())?;
    let part_number = to_part_number(input.part_number)?;
    let upload_ref = (input.bucket.as_str(), input.key.as_str(), input.upload_id.as_str());
    let (etag_hex, sse) = put_part(
        face,
        upload_ref,
        part_number,
        body,
        expected_md5.as_deref(),
        customer.as_ref(),
    )
    .await?;
    Ok(S3Response::new(
        UploadPartOutput {
            e_tag: Some(etag(&etag_hex)),
            ..Default::default()
        }
        .with_sse(sse),
    ))
}

/// A part number as the object service takes it.
fn to_part_number(n: i32) -> S3Result<u32> {
    u32::try_from(n).map_err(|_| s3_error!(InvalidArgument, "bad part number"))
}

/// Stores part `part_number` of an upload (UploadPart, UploadPartCopy): its hex MD5, and the
/// SSE response headers of the upload's part requests.
async fn put_part<S, E>(
    face: &S3Face,
    upload_ref: (&str, &str, &str),
    part_number: u32,
    body: S,
    expected_md5: Option<&[u8]>,
    customer: Option<&SseCustomer>,
) -> S3Result<(String, SseHeaders)>
where
    S: futures::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    crate::object::ObjectError: From<E>,
{
    let etag_hex = face
        .objects
        .put_part(upload_ref, part_number, body, expected_md5, customer.map(|c| &c.key))
        .await
        .map_err(s3_err)?;
    let upload = face.objects.upload(upload_ref).map_err(s3_err)?;
    let sse = match &upload.encryption {
        Some(e) => SseHeaders::of_upload(e, customer),
        None => SseHeaders::default(),
    };
    Ok((etag_hex, sse))
}

/// UploadPartCopy: a part whose bytes are (a range of) an existing object, decrypted and
/// encrypted again with the upload's key.
pub(super) async fn upload_part_copy(
    face: &S3Face,
    req: S3Request<UploadPartCopyInput>,
) -> S3Result<S3Response<UploadPartCopyOutput>> {
    let source = super::copy::open_copy_source(face, &req).await?;
    let customer = request_customer_key(face, &req)?;
    let input = req.input;
    let part_number = to_part_number(input.part_number)?;
    let range = input
        .copy_source_range
        .as_deref()
        .map(|r| copy_source_range(r, source.entry.size))
        .transpose()?;
    let got = source.read(range).await.map_err(s3_err)?;
    let upload_ref = (input.bucket.as_str(), input.key.as_str(), input.upload_id.as_str());
    let (etag_hex, sse) = put_part(
        face,
        upload_ref,
        part_number,
        got.into_stream(),
        None,
        customer.as_ref(),
    )
    .await?;
    Ok(S3Response::new(
        UploadPartCopyOutput {
            copy_part_result: Some(CopyPartResult {
                e_tag: Some(etag(&etag_hex)),
                last_modified: Some(timestamp(chrono::Utc::now())),
                ..Default::default()
            }),
            ..Default::default()
        }
        .with_sse(sse),
    ))
}

/// `x-amz-copy-source-range`: `bytes=first-last`, both given, within the source.
fn copy_source_range(range: &str, size: u64) -> S3Result<GetRange> {
    let parsed = range
        .strip_prefix("bytes=")
        .and_then(|r| r.split_once('-'))
        .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)));
    match parsed {
        Some((first, last)) if first <= last && last < size => Ok(GetRange::Bounded(first..last + 1)),
        Some(_) => Err(s3_error!(
            InvalidRange,
            "the copy source range {range} is not within the {size}-byte source object"
        )),
        None => Err(s3_error!(
            InvalidArgument,
            "the x-amz-copy-source-range value must be of the form bytes=first-last"
        )),
    }
}

pub(super) async fn complete_multipart_upload(
    face: &S3Face,
    req: S3Request<CompleteMultipartUploadInput>,
) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
    let customer = request_customer_key(face, &req)?;
    let input = req.input;
    let condition = write_condition(input.if_match.as_ref(), input.if_none_match.as_ref())?;
    let parts: Vec<(u32, String)> = input
        .multipart_upload
        .and_then(|m| m.parts)
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            let number = p.part_number.and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
            let tag = p.e_tag.map(|t| t.value().to_owned()).unwrap_or_default();
            (number, tag)
        })
        .collect();
    let entry = face
        .objects
        .complete_upload(
            (&input.bucket, &input.key, &input.upload_id),
            &parts,
            customer.as_ref().map(|c| &c.key),
            condition,
            MIN_PART_SIZE,
        )
        .await
        .map_err(s3_err)?;
    let sse = SseHeaders::of_object(&entry.encryption, customer.as_ref());
    Ok(S3Response::new(
        CompleteMultipartUploadOutput {
            bucket: Some(input.bucket.clone()),
            key: Some(input.key.clone()),
            e_tag: Some(etag(&entry.etag)),
            location: Some(format!("/{}/{}", input.bucket, input.key)),
            ..Default::default()
        }
        .with_sse(sse),
    ))
}

pub(super) async fn abort_multipart_upload(
    face: &S3Face,
    req: S3Request<AbortMultipartUploadInput>,
) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
    let input = req.input;
    face.objects
        .abort_upload((&input.bucket, &input.key, &input.upload_id))
        .await
        .map_err(s3_err)?;
    Ok(S3Response::new(AbortMultipartUploadOutput::default()))
}

pub(super) async fn list_parts(face: &S3Face, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
    let input = req.input;
    let marker = input
        .part_number_marker
        .and_then(|m| u32::try_from(m).ok())
        .unwrap_or(0);
    let max = input.max_parts.unwrap_or(1000).clamp(1, 1000) as usize;
    let all = face
        .objects
        .list_parts((&input.bucket, &input.key, &input.upload_id))
        .map_err(s3_err)?;
    let after: Vec<_> = all.into_iter().filter(|(n, _)| *n > marker).collect();
    let truncated = after.len() > max;
    let page: Vec<_> = after.into_iter().take(max).collect();
    let next = if truncated {
        page.last().map(|(n, _)| *n as i32)
    } else {
        None
    };
    let parts = page
        .into_iter()
        .map(|(n, r)| Part {
            part_number: Some(n as i32),
            size: Some(r.size as i64),
            e_tag: Some(etag(&r.etag)),
            last_modified: Some(timestamp(r.last_modified)),
            ..Default::default()
        })
        .collect();
    Ok(S3Response::new(ListPartsOutput {
        bucket: Some(input.bucket),
        key: Some(input.key),
        upload_id: Some(input.upload_id),
        part_number_marker: input.part_number_marker,
        next_part_number_marker: next,
        max_parts: Some(max as i32),
        is_truncated: Some(truncated),
        parts: Some(parts),
        ..Default::default()
    }))
}

pub(super) async fn list_multipart_uploads(
    face: &S3Face,
    req: S3Request<ListMultipartUploadsInput>,
) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
    let input = req.input;
    let prefix = input.prefix.clone().unwrap_or_default();
    let uploads = face
        .objects
        .list_uploads(&input.bucket)
        .map_err(s3_err)?
        .into_iter()
        .filter(|(_, u)| u.key.starts_with(&prefix))
        .map(|(id, u)| MultipartUpload {
            key: Some(u.key),
            upload_id: Some(id),
            initiated: Some(timestamp(u.initiated)),
            ..Default::default()
        })
        .collect();
    Ok(S3Response::new(ListMultipartUploadsOutput {
        bucket: Some(input.bucket),
        prefix: input.prefix,
        is_truncated: Some(false),
        uploads: Some(uploads),
        ..Default::default()
    }))
}
