//! Streaming segment encryption: async streams of bytes in, sealed or opened batches out.
//!
//! Input is cut into batches of whole segments (4 MiB by default); each batch is sealed or
//! opened on the rayon pool while the next one is read, two batches in flight at most, so a
//! request of any size holds a bounded amount of memory (about four batches).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::stream::{self, BoxStream, Stream, StreamExt, TryStreamExt};
use thiserror::Error;

use super::segment::{SegmentCipher, SegmentError};

/// Segments per batch: 64 segments of 64 KiB, 4 MiB — enough to keep every core busy.
pub const DEFAULT_BATCH_SEGMENTS: usize = 64;
/// Batches sealed or opened concurrently per stream.
const IN_FLIGHT: usize = 2;

/// Errors of the streaming layer.
#[derive(Debug, Error)]
pub enum StreamError {
    /// Sealing or opening failed (integrity, layout).
    #[error(transparent)]
    Segment(#[from] SegmentError),
    /// The input stream failed.
    #[error("reading the input failed: {0}")]
    Input(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The input ended before the length it announced.
    #[error("input ended after {got} of {expected} bytes")]
    ShortInput {
        /// Bytes received.
        got: u64,
        /// Bytes announced.
        expected: u64,
    },
}

/// Runs `f` on the rayon pool and waits for it without blocking the async runtime.
pub(crate) async fn on_rayon<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = tokio::sync::oneshot::channel();
    rayon::spawn(move || {
        let _ = tx.send(f());
    });
    rx.await.expect("rayon task panicked")
}

/// Runs crypto work right here when `inline` (a small batch: handing it to the rayon pool and
/// back costs more than the work, and small objects were dominated by those thread switches),
/// otherwise on the pool, where a batch's segments are spread over its threads. Sealing
/// stays inline for one segment only (measured with `bench object`: inline sealing of larger
/// batches cost concurrent PUTs of 128 KiB objects about a tenth); opening goes inline up to
/// [`super::segment::on_this_thread`]'s bound (a 200 KiB GET at one client: 1.5-1.75× the rate).
async fn crypto_work<T: Send + 'static>(inline: bool, f: impl FnOnce() -> T + Send + 'static) -> T {
    if inline {
        f()
    } else {
        on_rayon(f).await
    }
}

/// Cuts `input` into batches of exactly `batch` bytes, looking one chunk ahead so that the
/// batch that ends the input is known: yields `(bytes, is_last)`. The last batch may be
/// shorter, and is empty only for empty input. A chunk that starts a batch and that nobody
/// else holds becomes the batch's buffer as it is: input read in whole batches is never
/// copied; pieces of a batch are gathered into one buffer.
fn batches<S, E>(input: S, batch: usize) -> impl Stream<Item = Result<(BytesMut, bool), StreamError>> + Send
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    struct State<S> {
        input: S,
        pending: BytesMut,
        /// A chunk read to learn that more input follows, not yet in `pending`.
        ahead: Option<Bytes>,
        finished: bool,
    }
    async fn next_chunk<S, E>(st: &mut State<S>) -> Result<Option<Bytes>, StreamError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::error::Error + Send + Sync + 'static,
    {
        if let Some(chunk) = st.ahead.take() {
            return Ok(Some(chunk));
        }
        st.input
            .next()
            .await
            .transpose()
            .map_err(|e| StreamError::Input(Box::new(e)))
    }
    let state = State {
        input,
        pending: BytesMut::new(),
        ahead: None,
        finished: false,
    };
    stream::try_unfold(state, move |mut st| async move {
        if st.finished {
            return Ok(None);
        }
        while st.pending.len() < batch {
            match next_chunk(&mut st).await? {
                Some(chunk) if st.pending.is_empty() => {
                    st.pending = chunk
                        .try_into_mut()
                        .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
                }
                Some(chunk) => st.pending.extend_from_slice(&chunk),
                None => {
                    // The input ended: what is pending is the last batch.
                    st.finished = true;
                    let last = st.pending.split();
                    return Ok(Some(((last, true), st)));
                }
            }
        }
        if st.pending.len() == batch {
            // Exactly a batch: whether it is the last depends on what comes next (an empty
            // chunk says nothing).
            loop {
                match next_chunk(&mut st).await? {
                    Some(chunk) if chunk.is_empty() => {}
                    Some(chunk) => {
                        st.ahead = Some(chunk);
                        break;
                    }
                    None => {
                        st.finished = true;
                        let last = st.pending.split();
                        return Ok(Some(((last, true), st)));
                    }
                }
            }
        }
        let next = st.pending.split_to(batch);
        Ok(Some(((next, false), st)))
    })
}

/// Seals `input` (plaintext) into sealed segments, starting at segment 0. Each batch is
/// sealed in place in the buffer it was gathered into, and handed on as zero-copy slices:
/// ciphertext, tag, ciphertext, tag, …
pub fn seal_stream<S, E>(
    cipher: Arc<SegmentCipher>,
    input: S,
    batch_segments: usize,
) -> BoxStream<'static, Result<Bytes, StreamError>>
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    let segment = cipher.size().get() as usize;
    let batch = batch_segments * segment;
    batches(input, batch)
        .enumerate()
        .map(move |(i, item)| {
            let cipher = cipher.clone();
            async move {
                let (mut plain, last) = item?;
                let first = (i * batch_segments) as u64;
                crypto_work(plain.len() <= segment, move || {
                    let tags = cipher.seal_in_place(first, &mut plain, last)?;
                    let mut parts = Vec::with_capacity(2 * tags.len());
                    for tag in tags {
                        parts.push(plain.split_to(segment.min(plain.len())).freeze());
                        parts.push(Bytes::copy_from_slice(&tag));
                    }
                    Ok::<_, StreamError>(stream::iter(parts.into_iter().map(Ok)))
                })
                .await
            }
        })
        .buffered(IN_FLIGHT)
        .try_flatten()
        .boxed()
}

/// A run of consecutive sealed segments to open, and the part of its plaintext wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentRun {
    /// Index of the run's first segment.
    pub first: u64,
    /// Sealed bytes in the run.
    pub sealed_len: u64,
    /// Whether the run includes the object's last segment.
    pub ends_object: bool,
    /// Plaintext bytes to drop from the start of the run.
    pub skip: u64,
    /// Plaintext bytes to return after those.
    pub take: u64,
}

/// Opens a run of sealed segments read from a store: `input` yields the run's sealed
/// bytes; the output is the wanted part of its plaintext.
pub fn open_stream<S, E>(
    cipher: Arc<SegmentCipher>,
    input: S,
    run: SegmentRun,
    batch_segments: usize,
) -> BoxStream<'static, Result<Bytes, StreamError>>
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    let sealed_segment = cipher.size().get() as usize + super::gcm::TAG_LEN;
    let batch = batch_segments * sealed_segment;
    let SegmentRun {
        first,
        sealed_len,
        ends_object,
        skip,
        take,
    } = run;
    let batch_count = sealed_len.div_ceil(batch as u64).max(1);
    let opened = batches(input, batch)
        .enumerate()
        .map(move |(i, item)| {
            let cipher = cipher.clone();
            async move {
                let (sealed, input_ended) = item?;
                let is_final = i as u64 + 1 == batch_count;
                let got = i as u64 * batch as u64 + sealed.len() as u64;
                if input_ended != is_final || (is_final && got != sealed_len) {
                    return Err(StreamError::ShortInput {
                        got,
                        expected: sealed_len,
                    });
                }
                let first = first + (i * batch_segments) as u64;
                let mut sealed = sealed;
                crypto_work(super::segment::on_this_thread(sealed.len()), move || {
                    // Open in place, then hand on each segment's plaintext as a zero-copy slice.
                    cipher.open_in_place(first, &mut sealed, ends_object && is_final)?;
                    let mut parts = Vec::with_capacity(sealed.len() / sealed_segment + 1);
                    while !sealed.is_empty() {
                        let mut slot = sealed.split_to(sealed_segment.min(sealed.len()));
                        slot.truncate(slot.len() - super::gcm::TAG_LEN);
                        parts.push(slot.freeze());
                    }
                    Ok::<_, StreamError>(stream::iter(parts.into_iter().map(Ok)))
                })
                .await
            }
        })
        .buffered(IN_FLIGHT)
        .try_flatten();
    // Trim to the requested plaintext range.
    let mut to_skip = skip;
    let mut to_take = take;
    opened
        .try_filter_map(move |mut plain: Bytes| {
            let drop_front = to_skip.min(plain.len() as u64) as usize;
            to_skip -= drop_front as u64;
            let _ = plain.split_to(drop_front);
            let keep = to_take.min(plain.len() as u64) as usize;
            to_take -= keep as u64;
            plain.truncate(keep);
            futures::future::ready(Ok((!plain.is_empty()).then_some(plain)))
        })
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::segment::SegmentSize;

    fn cipher() -> Arc<SegmentCipher> {
        Arc::new(SegmentCipher::new(
            &[3; 32],
            [4; 7],
            [5; 32],
            SegmentSize::new(4096).unwrap(),
        ))
    }

    fn chunks(data: &[u8], size: usize) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin + 'static {
        let parts: Vec<Result<Bytes, std::io::Error>> = data
            .chunks(size.max(1))
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        stream::iter(parts)
    }

    fn run(first: u64, sealed_len: u64, ends_object: bool, skip: u64, take: u64) -> SegmentRun {
        SegmentRun {
            first,
            sealed_len,
            ends_object,
            skip,
            take,
        }
    }

    async fn collect(s: BoxStream<'static, Result<Bytes, StreamError>>) -> Result<Vec<u8>, StreamError> {
        let parts: Vec<Bytes> = s.try_collect().await?;
        Ok(parts.concat())
    }

    #[tokio::test]
    async fn batches_know_the_last_one_and_take_whole_chunks_without_copying() {
        // (chunk lengths in, (batch length, is last) out)
        type Case = (&'static [usize], &'static [(usize, bool)]);
        let cases: [Case; 7] = [
            (&[1000, 1000], &[(1000, false), (1000, true)]),
            (&[1000, 0, 1000, 0], &[(1000, false), (1000, true)]),
            (&[400, 600, 1000, 1], &[(1000, false), (1000, false), (1, true)]),
            (&[2500], &[(1000, false), (1000, false), (500, true)]),
            (&[999, 2], &[(1000, false), (1, true)]),
            (&[], &[(0, true)]),
            (&[0], &[(0, true)]),
        ];
        for (lens, expected) in cases {
            let mut at = 0u8;
            let chunks: Vec<Bytes> = lens
                .iter()
                .map(|&n| {
                    let chunk: Vec<u8> = (0..n).map(|i| at.wrapping_add(i as u8)).collect();
                    at = at.wrapping_add(n as u8);
                    Bytes::from(chunk)
                })
                .collect();
            let whole: Vec<u8> = chunks.iter().flat_map(|c| c.to_vec()).collect();
            // Chunks of exactly a batch, held by nobody else: their own buffers come out.
            let addresses: Vec<usize> = chunks
                .iter()
                .filter(|c| c.len() == 1000)
                .map(|c| c.as_ptr() as usize)
                .collect();
            let input = stream::iter(chunks.into_iter().map(Ok::<_, std::io::Error>));
            let got: Vec<(BytesMut, bool)> = batches(input, 1000).try_collect().await.unwrap();
            let shape: Vec<(usize, bool)> = got.iter().map(|(b, last)| (b.len(), *last)).collect();
            assert_eq!(shape, expected, "{lens:?}");
            let joined: Vec<u8> = got.iter().flat_map(|(b, _)| b.to_vec()).collect();
            assert_eq!(joined, whole, "{lens:?}");
            for address in addresses {
                assert!(
                    got.iter().any(|(b, _)| b.as_ptr() as usize == address),
                    "{lens:?}: a whole-batch chunk was copied"
                );
            }
        }
    }

    #[tokio::test]
    async fn streamed_seal_equals_one_shot_and_opens_in_any_chunking() {
        let c = cipher();
        for len in [0usize, 1, 4095, 4096, 4097, 2 * 4 * 4096, 2 * 4 * 4096 + 1, 100_000] {
            let plain: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            for chunk in [1000, 4096, 7777] {
                let sealed = collect(seal_stream(c.clone(), chunks(&plain, chunk), 4)).await.unwrap();
                assert_eq!(sealed, c.seal(0, &plain, true).unwrap(), "len {len} chunk {chunk}");
                let n = sealed.len() as u64;
                let opened = collect(open_stream(
                    c.clone(),
                    chunks(&sealed, chunk),
                    run(0, n, true, 0, len as u64),
                    4,
                ))
                .await
                .unwrap();
                assert_eq!(opened, plain);
            }
        }
    }

    #[tokio::test]
    async fn ranged_open_trims_and_short_input_fails() {
        let c = cipher();
        let plain: Vec<u8> = (0..50_000).map(|i| (i % 251) as u8).collect();
        let sealed = c.seal(0, &plain, true).unwrap();
        // Plaintext 5000..=20000 lies in segments 1..=4 (4096-byte segments).
        let (first, last) = (1u64, 4u64);
        let range = &sealed[(first * 4112) as usize..((last + 1) * 4112) as usize];
        let out = collect(open_stream(
            c.clone(),
            chunks(range, 3000),
            run(first, range.len() as u64, false, 5000 - 4096, 15001),
            2,
        ))
        .await
        .unwrap();
        assert_eq!(out, &plain[5000..=20000]);

        let short = &sealed[..sealed.len() - 4112];
        let err = collect(open_stream(
            c.clone(),
            chunks(short, 3000),
            run(0, sealed.len() as u64, true, 0, 50_000),
            2,
        ))
        .await;
        assert!(err.is_err());
    }
}
