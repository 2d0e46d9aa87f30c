//! Flexible checksums (`x-amz-checksum-crc32|crc32c|crc64nvme|sha1|sha256`): when a request
//! announces one, in a header or as a trailer of an `aws-chunked` body, the body is checked
//! against it as it streams, and a mismatch fails the write before anything is published
//! (400 `BadDigest`), as AWS does. Current SDKs send a CRC32 with every upload.

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use http::HeaderMap;
use s3s::checksum::ChecksumHasher;
use s3s::dto::Checksum;
use s3s::{s3_error, S3Result};

use crate::object::ObjectError;

/// The algorithms, by the suffix of their header name.
const ALGORITHMS: [&str; 5] = ["crc32", "crc32c", "crc64nvme", "sha1", "sha256"];

/// Where the announced value is.
enum Expected {
    /// In the request's headers.
    Header(String),
    /// In the trailer of the chunked body (known when the body has been read).
    Trailer(s3s::TrailingHeaders, http::HeaderName),
}

struct Check {
    algorithm: &'static str,
    hasher: ChecksumHasher,
    expected: Expected,
}

impl Check {
    fn verify(self) -> Result<(), ObjectError> {
        let expected = match self.expected {
            Expected::Header(v) => Some(v),
            Expected::Trailer(trailers, name) => trailers
                .read(|h| h.get(&name).and_then(|v| v.to_str().ok()).map(str::to_owned))
                .flatten(),
        };
        let Some(expected) = expected else {
            return Err(ObjectError::BadChecksum(format!(
                "the request announced a trailing x-amz-checksum-{} but the body carried none",
                self.algorithm
            )));
        };
        let computed: Checksum = self.hasher.finalize();
        let actual = match self.algorithm {
            "crc32" => computed.checksum_crc32,
            "crc32c" => computed.checksum_crc32c,
            "crc64nvme" => computed.checksum_crc64nvme,
            "sha1" => computed.checksum_sha1,
            _ => computed.checksum_sha256,
        };
        if actual.as_deref() == Some(expected.trim()) {
            Ok(())
        } else {
            Err(ObjectError::BadChecksum(format!(
                "the {} checksum you specified did not match the calculated checksum",
                self.algorithm.to_uppercase()
            )))
        }
    }
}

fn hasher_for(algorithm: &str) -> ChecksumHasher {
    use s3s::crypto::Checksum as _;
    let mut h = ChecksumHasher::default();
    match algorithm {
        "crc32" => h.crc32 = Some(s3s::crypto::Crc32::new()),
        "crc32c" => h.crc32c = Some(s3s::crypto::Crc32c::new()),
        "crc64nvme" => h.crc64nvme = Some(s3s::crypto::Crc64Nvme::new()),
        "sha1" => h.sha1 = Some(s3s::crypto::Sha1::new()),
        _ => h.sha256 = Some(s3s::crypto::Sha256::new()),
    }
    h
}

/// The checksum a request announces, if any.
fn announced(headers: &HeaderMap, trailers: Option<&s3s::TrailingHeaders>) -> S3Result<Option<Check>> {
    for algorithm in ALGORITHMS {
        let name = format!("x-amz-checksum-{algorithm}");
        if let Some(v) = headers.get(name.as_str()) {
            let value = v
                .to_str()
                .map_err(|_| s3_error!(InvalidRequest, "the {} header is not text", name))?;
            return Ok(Some(Check {
                algorithm,
                hasher: hasher_for(algorithm),
                expected: Expected::Header(value.to_owned()),
            }));
        }
    }
    let Some(trailer) = headers.get("x-amz-trailer") else {
        return Ok(None);
    };
    let trailer = trailer.to_str().unwrap_or_default().trim().to_ascii_lowercase();
    let Some(algorithm) = ALGORITHMS
        .into_iter()
        .find(|a| trailer.strip_prefix("x-amz-checksum-") == Some(a))
    else {
        return Err(s3_error!(InvalidRequest, "unsupported x-amz-trailer '{}'", trailer));
    };
    let Some(trailers) = trailers else {
        return Err(s3_error!(
            InvalidRequest,
            "x-amz-trailer needs an aws-chunked body with a trailer"
        ));
    };
    Ok(Some(Check {
        algorithm,
        hasher: hasher_for(algorithm),
        expected: Expected::Trailer(
            trailers.clone(),
            http::HeaderName::from_bytes(trailer.as_bytes())
                .map_err(|_| s3_error!(InvalidRequest, "bad x-amz-trailer"))?,
        ),
    }))
}

/// The request body as the object service takes it, checked against the checksum the
/// request announces: the stream ends with a `BadChecksum` error instead of its end when the
/// bytes do not match, which makes the write abort.
pub(super) fn checked_body(
    body: Option<s3s::dto::StreamingBlob>,
    headers: &HeaderMap,
    trailers: Option<&s3s::TrailingHeaders>,
) -> S3Result<BoxStream<'static, Result<Bytes, ObjectError>>> {
    let body = body
        .unwrap_or_else(super::empty_body)
        .map(|chunk| chunk.map_err(|e| ObjectError::Body(e.to_string())));
    let Some(check) = announced(headers, trailers)? else {
        return Ok(body.boxed());
    };
    Ok(
        futures::stream::unfold((body, Some(check)), |(mut body, mut check)| async move {
            match body.next().await {
                Some(Ok(bytes)) => {
                    if let Some(c) = check.as_mut() {
                        c.hasher.update(&bytes);
                    }
                    Some((Ok(bytes), (body, check)))
                }
                Some(Err(e)) => Some((Err(e), (body, None))),
                None => match check.take().map(Check::verify) {
                    Some(Err(e)) => Some((Err(e), (body, None))),
                    _ => None,
                },
            }
        })
        .boxed(),
    )
}
