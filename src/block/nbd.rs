//! An NBD server (the Network Block Device protocol, fixed newstyle) for encrypted volumes,
//! on tokio.
//!
//! Handshake: NBD_OPT_EXPORT_NAME, INFO, GO, LIST, ABORT, STRUCTURED_REPLY and
//! LIST/SET_META_CONTEXT (the `base:allocation` context: BLOCK_STATUS reports holes, from the
//! volume file's own allocation); other options (TLS) are refused with NBD_REP_ERR_UNSUP. Replies are simple, or
//! structured (one chunk each, with a message on errors) when the client asked for them.
//! Transmission: READ, WRITE (with FUA), FLUSH, TRIM, WRITE_ZEROES, BLOCK_STATUS, DISC. TRIM and
//! WRITE_ZEROES punch holes (the range reads as zeros and its space is freed), except
//! WRITE_ZEROES with NO_HOLE, which writes encrypted zeros.
//! Requests are read one after another but served concurrently, and each reply goes out when
//! its request is done, so replies may come out of order (clients match them by cookie).
//! Any byte alignment is accepted (the volume reads, modifies and writes partial sectors).
//! FLUSH and FUA mean durable: the volume file is fdatasync'ed.
//! Resources are bounded ([`Limits`]): bytes of requests in flight per connection and per
//! server (back-pressure: the server stops reading a client's requests), connections, and the
//! time to negotiate and to sit idle.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Mutex, Semaphore};

use super::Volume;

const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
const REQUEST_MAGIC: u32 = 0x2560_9513;
const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;
const REPLY_FLAG_DONE: u16 = 1;
const REPLY_TYPE_NONE: u16 = 0;
const REPLY_TYPE_OFFSET_DATA: u16 = 1;
const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
const REPLY_TYPE_ERROR: u16 = (1 << 15) + 1;

const FLAG_FIXED_NEWSTYLE: u16 = 1;
const FLAG_NO_ZEROES: u16 = 2;
const CLIENT_NO_ZEROES: u32 = 2;

const OPT_EXPORT_NAME: u32 = 1;
const OPT_ABORT: u32 = 2;
const OPT_LIST: u32 = 3;
const OPT_INFO: u32 = 6;
const OPT_GO: u32 = 7;
const OPT_STRUCTURED_REPLY: u32 = 8;
const OPT_LIST_META_CONTEXT: u32 = 9;
const OPT_SET_META_CONTEXT: u32 = 10;

const REP_ACK: u32 = 1;
const REP_SERVER: u32 = 2;
const REP_INFO: u32 = 3;
const REP_META_CONTEXT: u32 = 4;
const REP_ERR_UNSUP: u32 = (1 << 31) + 1;
const REP_ERR_INVALID: u32 = (1 << 31) + 3;
const REP_ERR_UNKNOWN: u32 = (1 << 31) + 6;
const INFO_EXPORT: u16 = 0;

const TX_HAS_FLAGS: u16 = 1;
const TX_READ_ONLY: u16 = 1 << 1;
const TX_SEND_FLUSH: u16 = 1 << 2;
const TX_SEND_FUA: u16 = 1 << 3;
const TX_SEND_TRIM: u16 = 1 << 5;
const TX_SEND_WRITE_ZEROES: u16 = 1 << 6;
const TX_CAN_MULTI_CONN: u16 = 1 << 8;
const TX_SEND_FAST_ZERO: u16 = 1 << 11;

const CMD_FLAG_FUA: u16 = 1;
const CMD_FLAG_NO_HOLE: u16 = 1 << 1;
const CMD_FLAG_REQ_ONE: u16 = 1 << 3;
const CMD_FLAG_FAST_ZERO: u16 = 1 << 4;

/// The one metadata context served: which ranges are holes (unallocated, reading as zeros).
const BASE_ALLOCATION: &str = "base:allocation";
/// Its id on every connection that selects it.
const BASE_ALLOCATION_ID: u32 = 1;
const STATE_HOLE: u32 = 1;
const STATE_ZERO: u32 = 2;
const CMD_READ: u16 = 0;
const CMD_WRITE: u16 = 1;
const CMD_DISC: u16 = 2;
const CMD_FLUSH: u16 = 3;
const CMD_TRIM: u16 = 4;
const CMD_WRITE_ZEROES: u16 = 6;
const CMD_BLOCK_STATUS: u16 = 7;

const EPERM: u32 = 1;
const EIO: u32 = 5;
const EINVAL: u32 = 22;
const ENOSPC: u32 = 28;
const EOVERFLOW: u32 = 75;
const ENOTSUP: u32 = 95;

/// Largest READ or WRITE served (the NBD convention; larger requests get EINVAL, and a larger
/// WRITE ends the connection since its payload cannot be skipped safely).
pub const MAX_REQUEST: u32 = 32 << 20;
/// Option payloads above this end the handshake.
const MAX_OPTION: u32 = 64 << 10;

/// How long a client may take to negotiate (hello to GO or EXPORT_NAME).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// What clients may hold of a server. Requests in flight are counted in bytes (a READ's
/// buffer, a WRITE's payload; at least 1 KiB each): at a connection's limit, or the server's,
/// the server stops reading that connection's requests until replies drain — back-pressure,
/// not an error — so a client that never reads its replies holds at most its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of requests in flight per connection (at least [`MAX_REQUEST`]).
    pub per_connection_bytes: usize,
    /// Bytes of requests in flight across every connection (at least the per-connection limit).
    pub total_bytes: usize,
    /// Connections served at once; beyond it a new connection is closed at once (logged).
    pub max_connections: usize,
    /// A connection that sends no request for this long, with none in flight, is closed.
    pub idle_timeout: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_connection_bytes: 64 << 20,
            total_bytes: 512 << 20,
            max_connections: 128,
            idle_timeout: None,
        }
    }
}

/// [`Limits`] in force: the counters every connection of a server draws from.
#[derive(Debug, Clone)]
pub struct Budget {
    limits: Limits,
    /// KiB in flight across connections.
    total: Arc<Semaphore>,
    connections: Arc<Semaphore>,
}

impl Budget {
    /// Counters for `limits` (raised to their minimums).
    pub fn new(limits: Limits) -> Self {
        let per_connection = limits.per_connection_bytes.max(MAX_REQUEST as usize);
        let limits = Limits {
            per_connection_bytes: per_connection,
            total_bytes: limits.total_bytes.max(per_connection),
            max_connections: limits.max_connections.max(1),
            ..limits
        };
        Budget {
            total: Arc::new(Semaphore::new(limits.total_bytes >> 10)),
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            limits,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }
}

/// What a request holds while in flight, in KiB: its data, at least 1 KiB.
fn cost_kib(kind: u16, len: u32) -> u32 {
    match kind {
        CMD_READ | CMD_WRITE => len.div_ceil(1024).max(1),
        _ => 1,
    }
}

/// One export: a volume under a name.
#[derive(Debug, Clone)]
pub struct Export {
    /// Export name (clients ask for it; the empty name means this export too).
    pub name: String,
    /// The volume.
    pub volume: Arc<Volume>,
    /// Refuse writes.
    pub read_only: bool,
}

impl Export {
    fn transmission_flags(&self) -> u16 {
        let mut flags = TX_HAS_FLAGS | TX_SEND_FLUSH | TX_SEND_FUA | TX_CAN_MULTI_CONN;
        if self.read_only {
            flags |= TX_READ_ONLY;
        } else {
            flags |= TX_SEND_TRIM | TX_SEND_WRITE_ZEROES | TX_SEND_FAST_ZERO;
        }
        flags
    }
}

async fn option_reply<W: AsyncWrite + Unpin>(w: &mut W, option: u32, kind: u32, data: &[u8]) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(20 + data.len());
    out.extend_from_slice(&REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&option.to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    w.write_all(&out).await
}

/// Serves one client connection until it disconnects.
pub async fn serve_connection<S>(stream: S, exports: Arc<Vec<Export>>, budget: Budget) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (r, w) = tokio::io::split(stream);
    let negotiated = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(r, w, &exports)).await;
    let Ok(negotiated) = negotiated else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no export chosen within {} s", HANDSHAKE_TIMEOUT.as_secs()),
        ));
    };
    match negotiated? {
        Some((r, w, export, negotiated)) => transmission(r, w, export, negotiated, budget).await,
        None => Ok(()),
    }
}

/// Options until the client picks an export (then its halves, the export and whether replies
/// are structured) or leaves.
#[allow(clippy::type_complexity)]
async fn handshake<R, W>(mut r: R, mut w: W, exports: &[Export]) -> std::io::Result<Option<(R, W, Export, Negotiated)>>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut hello = Vec::with_capacity(18);
    hello.extend_from_slice(&NBDMAGIC.to_be_bytes());
    hello.extend_from_slice(&IHAVEOPT.to_be_bytes());
    hello.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    w.write_all(&hello).await?;
    let client_flags = r.read_u32().await?;
    let no_zeroes = client_flags & CLIENT_NO_ZEROES != 0;
    let mut structured = false;
    let mut allocation_context = false;

    let export = loop {
        if r.read_u64().await? != IHAVEOPT {
            return Err(std::io::Error::other("bad option magic"));
        }
        let option = r.read_u32().await?;
        let len = r.read_u32().await?;
        if len > MAX_OPTION {
            return Err(std::io::Error::other("option too large"));
        }
        let mut data = vec![0u8; len as usize];
        r.read_exact(&mut data).await?;
        let find = |name: &[u8]| {
            exports
                .iter()
                .find(|e| e.name.as_bytes() == name || (name.is_empty() && exports.len() == 1))
                .cloned()
        };
        match option {
            OPT_EXPORT_NAME => {
                // No error reply is possible here: an unknown name just ends the connection.
                let Some(export) = find(&data) else {
                    return Ok(None);
                };
                let mut out = Vec::with_capacity(134);
                out.extend_from_slice(&export.volume.size().to_be_bytes());
                out.extend_from_slice(&export.transmission_flags().to_be_bytes());
                if !no_zeroes {
                    out.extend_from_slice(&[0u8; 124]);
                }
                w.write_all(&out).await?;
                break export;
            }
            OPT_STRUCTURED_REPLY => {
                if data.is_empty() {
                    structured = true;
                    option_reply(&mut w, option, REP_ACK, &[]).await?;
                } else {
                    option_reply(&mut w, option, REP_ERR_INVALID, b"STRUCTURED_REPLY takes no data").await?;
                }
            }
            OPT_ABORT => {
                option_reply(&mut w, option, REP_ACK, &[]).await?;
                return Ok(None);
            }
            OPT_LIST => {
                if !data.is_empty() {
                    option_reply(&mut w, option, REP_ERR_INVALID, b"LIST takes no data").await?;
                    continue;
                }
                for e in exports.iter() {
                    let mut d = (e.name.len() as u32).to_be_bytes().to_vec();
                    d.extend_from_slice(e.name.as_bytes());
                    option_reply(&mut w, option, REP_SERVER, &d).await?;
                }
                option_reply(&mut w, option, REP_ACK, &[]).await?;
            }
            OPT_INFO | OPT_GO => {
                let parsed = (|| {
                    let name_len = u32::from_be_bytes(data.get(..4)?.try_into().ok()?) as usize;
                    let name = data.get(4..4 + name_len)?;
                    let count = u16::from_be_bytes(data.get(4 + name_len..6 + name_len)?.try_into().ok()?) as usize;
                    (data.len() == 6 + name_len + 2 * count).then_some(name)
                })();
                let Some(name) = parsed else {
                    option_reply(&mut w, option, REP_ERR_INVALID, b"malformed INFO/GO request").await?;
                    continue;
                };
                let Some(export) = find(name) else {
                    let names: Vec<&str> = exports.iter().map(|e| e.name.as_str()).collect();
                    let msg = if name.is_empty() {
                        format!("no default export: name one of {}", names.join(", "))
                    } else {
                        format!(
                            "no export named '{}'; exports: {}",
                            String::from_utf8_lossy(name),
                            names.join(", ")
                        )
                    };
                    option_reply(&mut w, option, REP_ERR_UNKNOWN, msg.as_bytes()).await?;
                    continue;
                };
                let mut info = INFO_EXPORT.to_be_bytes().to_vec();
                info.extend_from_slice(&export.volume.size().to_be_bytes());
                info.extend_from_slice(&export.transmission_flags().to_be_bytes());
                option_reply(&mut w, option, REP_INFO, &info).await?;
                option_reply(&mut w, option, REP_ACK, &[]).await?;
                if option == OPT_GO {
                    break export;
                }
            }
            OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => {
                let set = option == OPT_SET_META_CONTEXT;
                let Some((name, queries)) = parse_meta_context_request(&data) else {
                    option_reply(&mut w, option, REP_ERR_INVALID, b"malformed meta context request").await?;
                    continue;
                };
                if set && !structured {
                    option_reply(&mut w, option, REP_ERR_INVALID, b"negotiate structured replies first").await?;
                    continue;
                }
                if find(name).is_none() {
                    let msg = format!("no export named '{}'", String::from_utf8_lossy(name));
                    option_reply(&mut w, option, REP_ERR_UNKNOWN, msg.as_bytes()).await?;
                    continue;
                }
                // LIST with no query, or the "base:" namespace, lists base:allocation.
                let matched = queries
                    .iter()
                    .any(|q| q.as_slice() == BASE_ALLOCATION.as_bytes() || (!set && q.as_slice() == b"base:"))
                    || (!set && queries.is_empty());
                if set {
                    allocation_context = matched;
                }
                if matched {
                    let mut reply = if set { BASE_ALLOCATION_ID } else { 0 }.to_be_bytes().to_vec();
                    reply.extend_from_slice(BASE_ALLOCATION.as_bytes());
                    option_reply(&mut w, option, REP_META_CONTEXT, &reply).await?;
                }
                option_reply(&mut w, option, REP_ACK, &[]).await?;
            }
            _ => option_reply(&mut w, option, REP_ERR_UNSUP, b"option not supported").await?,
        }
    };
    Ok(Some((
        r,
        w,
        export,
        Negotiated {
            structured,
            allocation_context,
        },
    )))
}

/// What a client chose before transmission.
#[derive(Debug, Clone, Copy)]
struct Negotiated {
    structured: bool,
    /// `base:allocation` was selected: BLOCK_STATUS is answered.
    allocation_context: bool,
}

/// `u32 name length ‖ export name ‖ u32 query count ‖ (u32 length ‖ query)*`.
fn parse_meta_context_request(data: &[u8]) -> Option<(&[u8], Vec<Vec<u8>>)> {
    let take_u32 = |at: usize| {
        data.get(at..at + 4)
            .map(|b| u32::from_be_bytes(b.try_into().expect("4")) as usize)
    };
    let name_len = take_u32(0)?;
    let name = data.get(4..4 + name_len)?;
    let count = take_u32(4 + name_len)?;
    let mut at = 8 + name_len;
    let mut queries = Vec::new();
    for _ in 0..count {
        let len = take_u32(at)?;
        queries.push(data.get(at + 4..at + 4 + len)?.to_vec());
        at += 4 + len;
    }
    (at == data.len()).then_some((name, queries))
}

/// How replies are framed on a connection.
#[derive(Debug, Clone, Copy)]
struct Replies {
    structured: bool,
}

impl Replies {
    /// Writes the reply to `cookie` as one write: success (with the data of a READ at
    /// `offset`), or `error`.
    async fn send<W: AsyncWrite + Unpin>(
        self,
        w: &Mutex<W>,
        cookie: u64,
        error: u32,
        read: Option<(u64, &[u8])>,
    ) -> std::io::Result<()> {
        // Small data goes in the same write as the header (one segment, no Nagle wait); large
        // data is written after it, under the same lock, rather than copied.
        let data: &[u8] = match (error, read) {
            (0, Some((_, d))) => d,
            _ => &[],
        };
        let inline = data.len() <= INLINE_REPLY;
        let mut out = Vec::with_capacity(32 + if inline { data.len() } else { 0 });
        if !self.structured {
            out.extend_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
            out.extend_from_slice(&error.to_be_bytes());
            out.extend_from_slice(&cookie.to_be_bytes());
        } else {
            let message: &[u8] = match error {
                EPERM => b"the export is read-only",
                EINVAL => b"invalid request",
                ENOSPC => b"beyond the end of the volume",
                EOVERFLOW => b"request too large",
                ENOTSUP => b"zeroing without holes is not fast here",
                _ => b"I/O error on the volume",
            };
            let (kind, payload_len) = match (error, read) {
                (0, Some((_, d))) => (REPLY_TYPE_OFFSET_DATA, 8 + d.len()),
                (0, None) => (REPLY_TYPE_NONE, 0),
                _ => (REPLY_TYPE_ERROR, 6 + message.len()),
            };
            out.extend_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
            out.extend_from_slice(&REPLY_FLAG_DONE.to_be_bytes());
            out.extend_from_slice(&kind.to_be_bytes());
            out.extend_from_slice(&cookie.to_be_bytes());
            out.extend_from_slice(&(payload_len as u32).to_be_bytes());
            match (error, read) {
                (0, Some((offset, _))) => out.extend_from_slice(&offset.to_be_bytes()),
                (0, None) => {}
                _ => {
                    out.extend_from_slice(&error.to_be_bytes());
                    out.extend_from_slice(&(message.len() as u16).to_be_bytes());
                    out.extend_from_slice(message);
                }
            }
        }
        if inline {
            out.extend_from_slice(data);
        }
        let mut w = w.lock().await;
        w.write_all(&out).await?;
        if !inline {
            w.write_all(data).await?;
        }
        Ok(())
    }
}

impl Replies {
    /// The `base:allocation` answer to a BLOCK_STATUS (structured replies only, which the
    /// context's negotiation required): one chunk of (length, flags) descriptors.
    async fn send_block_status<W: AsyncWrite + Unpin>(
        self,
        w: &Mutex<W>,
        cookie: u64,
        extents: &[(u64, bool)],
    ) -> std::io::Result<()> {
        let mut out = Vec::with_capacity(24 + 8 * extents.len());
        out.extend_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
        out.extend_from_slice(&REPLY_FLAG_DONE.to_be_bytes());
        out.extend_from_slice(&REPLY_TYPE_BLOCK_STATUS.to_be_bytes());
        out.extend_from_slice(&cookie.to_be_bytes());
        out.extend_from_slice(&((4 + 8 * extents.len()) as u32).to_be_bytes());
        out.extend_from_slice(&BASE_ALLOCATION_ID.to_be_bytes());
        for (len, hole) in extents {
            out.extend_from_slice(&(*len as u32).to_be_bytes());
            let flags = if *hole { STATE_HOLE | STATE_ZERO } else { 0 };
            out.extend_from_slice(&flags.to_be_bytes());
        }
        w.lock().await.write_all(&out).await
    }
}

/// READ data up to this size is copied into the reply's single write; larger data follows
/// the header in a write of its own.
const INLINE_REPLY: usize = 64 << 10;

/// The NBD error of a finished blocking volume call (0 for success).
fn status(done: Result<Result<(), super::VolumeError>, tokio::task::JoinError>) -> u32 {
    match done {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => errno(&e),
        Err(_) => EIO,
    }
}

fn errno(e: &super::VolumeError) -> u32 {
    match e {
        super::VolumeError::OutOfRange { .. } => ENOSPC,
        super::VolumeError::Invalid(_) => EINVAL,
        _ => EIO,
    }
}

async fn transmission<R, W>(
    mut r: R,
    w: W,
    export: Export,
    negotiated: Negotiated,
    budget: Budget,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let w = Arc::new(Mutex::new(w));
    let replies = Replies {
        structured: negotiated.structured,
    };
    let read_buffers = Arc::new(BufferPool::default());
    let mut in_flight = tokio::task::JoinSet::new();
    let own = Arc::new(Semaphore::new(budget.limits.per_connection_bytes >> 10));
    let result = loop {
        let mut header = [0u8; 28];
        let next = r.read_exact(&mut header);
        let read = match budget.limits.idle_timeout {
            Some(idle) if in_flight.is_empty() => match tokio::time::timeout(idle, next).await {
                Ok(read) => read,
                Err(_) => {
                    tracing::debug!(idle_secs = idle.as_secs(), "NBD connection idle: closed");
                    break Ok(());
                }
            },
            _ => next.await,
        };
        match read {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break Ok(()),
            Err(e) => break Err(e),
        }
        let magic = u32::from_be_bytes(header[0..4].try_into().expect("4"));
        let flags = u16::from_be_bytes(header[4..6].try_into().expect("2"));
        let kind = u16::from_be_bytes(header[6..8].try_into().expect("2"));
        let cookie = u64::from_be_bytes(header[8..16].try_into().expect("8"));
        let offset = u64::from_be_bytes(header[16..24].try_into().expect("8"));
        let len = u32::from_be_bytes(header[24..28].try_into().expect("4"));
        if magic != REQUEST_MAGIC {
            break Err(std::io::Error::other("bad request magic"));
        }
        let in_range = offset
            .checked_add(u64::from(len))
            .is_some_and(|end| end <= export.volume.size());
        // Back-pressure: no more of this client's requests are read until what is in flight
        // fits its limit and the server's. Held until the reply is written.
        let cost = if len > MAX_REQUEST { 1 } else { cost_kib(kind, len) };
        let held = (
            own.clone().acquire_many_owned(cost).await.expect("never closed"),
            budget
                .total
                .clone()
                .acquire_many_owned(cost)
                .await
                .expect("never closed"),
        );
        let (vol, w2) = (export.volume.clone(), w.clone());
        let fua = flags & CMD_FLAG_FUA != 0;
        match kind {
            CMD_DISC => break Ok(()),
            CMD_WRITE => {
                if len > MAX_REQUEST {
                    let _ = replies.send(&w, cookie, EOVERFLOW, None).await;
                    break Err(std::io::Error::other("write request too large"));
                }
                // Filled by the socket, not zeroed first: the request's bytes overwrite it all.
                let mut data = bytes::BytesMut::with_capacity(len as usize);
                while data.len() < len as usize {
                    let want = len as usize - data.len();
                    if (&mut r).take(want as u64).read_buf(&mut data).await? == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                }
                let error = if export.read_only {
                    Some(EPERM)
                } else if !in_range {
                    Some(ENOSPC)
                } else {
                    None
                };
                in_flight.spawn(async move {
                    let _held = held;
                    let error = match error {
                        Some(e) => e,
                        None => tokio::task::spawn_blocking(move || {
                            vol.write_at_in_place(offset, &mut data)
                                .and_then(|()| if fua { vol.flush() } else { Ok(()) })
                        })
                        .await
                        .map_or(EIO, |r| r.err().map_or(0, |e| errno(&e))),
                    };
                    replies.send(&w2, cookie, error, None).await
                });
            }
            CMD_READ => {
                if len > MAX_REQUEST || !in_range {
                    replies.send(&w, cookie, EINVAL, None).await?;
                    continue;
                }
                let pool = read_buffers.clone();
                in_flight.spawn(async move {
                    let _held = held;
                    let mut buf = pool.take(len as usize);
                    let read = tokio::task::spawn_blocking(move || {
                        let done = vol.read_at(offset, &mut buf);
                        (buf, done)
                    })
                    .await;
                    match read {
                        Ok((buf, done)) => {
                            let sent = match done {
                                Ok(()) => replies.send(&w2, cookie, 0, Some((offset, &buf))).await,
                                Err(e) => replies.send(&w2, cookie, errno(&e), None).await,
                            };
                            pool.give_back(buf);
                            sent
                        }
                        Err(_) => replies.send(&w2, cookie, EIO, None).await,
                    }
                });
            }
            CMD_FLUSH => {
                in_flight.spawn(async move {
                    let _held = held;
                    let done = tokio::task::spawn_blocking(move || vol.flush()).await;
                    replies.send(&w2, cookie, status(done), None).await
                });
            }
            CMD_TRIM | CMD_WRITE_ZEROES => {
                if export.read_only || !in_range {
                    let e = if export.read_only { EPERM } else { ENOSPC };
                    replies.send(&w, cookie, e, None).await?;
                    continue;
                }
                // WRITE_ZEROES with NO_HOLE must stay allocated: encrypted zeros are written.
                // Otherwise (and for TRIM) the range is punched: it reads as zeros and its
                // space is freed.
                let keep_allocated = kind == CMD_WRITE_ZEROES && flags & CMD_FLAG_NO_HOLE != 0;
                // FAST_ZERO: fail at once rather than be slow. Punching is fast; writing
                // encrypted zeros (NO_HOLE) is not.
                if kind == CMD_WRITE_ZEROES && keep_allocated && flags & CMD_FLAG_FAST_ZERO != 0 {
                    replies.send(&w, cookie, ENOTSUP, None).await?;
                    continue;
                }
                in_flight.spawn(async move {
                    let _held = held;
                    let done = tokio::task::spawn_blocking(move || {
                        if !keep_allocated {
                            vol.discard(offset, u64::from(len))?;
                        } else {
                            let chunk = vec![0u8; 1 << 20];
                            let mut at = offset;
                            let end = offset + u64::from(len);
                            while at < end {
                                let n = (end - at).min(chunk.len() as u64) as usize;
                                vol.write_at(at, &chunk[..n])?;
                                at += n as u64;
                            }
                        }
                        if fua {
                            vol.flush()?;
                        }
                        Ok::<_, super::VolumeError>(())
                    })
                    .await;
                    replies.send(&w2, cookie, status(done), None).await
                });
            }
            CMD_BLOCK_STATUS => {
                if !negotiated.allocation_context || !in_range || len == 0 {
                    replies.send(&w, cookie, EINVAL, None).await?;
                    continue;
                }
                let one = flags & CMD_FLAG_REQ_ONE != 0;
                in_flight.spawn(async move {
                    let _held = held;
                    let map = tokio::task::spawn_blocking(move || vol.allocation(offset, u64::from(len))).await;
                    match map {
                        Ok(Ok(mut extents)) => {
                            if one {
                                extents.truncate(1);
                            }
                            replies.send_block_status(&w2, cookie, &extents).await
                        }
                        Ok(Err(e)) => replies.send(&w2, cookie, errno(&e), None).await,
                        Err(_) => replies.send(&w2, cookie, EIO, None).await,
                    }
                });
            }
            _ => replies.send(&w, cookie, EINVAL, None).await?,
        }
        // Reap finished requests so the set does not grow without bound.
        while let Some(done) = in_flight.try_join_next() {
            if let Ok(Err(e)) = done {
                tracing::debug!(error = %e, "NBD reply failed");
            }
        }
    };
    // Every request received gets its reply before the connection closes.
    while in_flight.join_next().await.is_some() {}
    let _ = w.lock().await.shutdown().await;
    result
}

/// Where an NBD server listens: TCP or a Unix socket.
#[derive(Debug)]
pub enum NbdListener {
    /// A TCP listener.
    Tcp(tokio::net::TcpListener),
    /// A Unix socket, removed when the listener is dropped.
    Unix(tokio::net::UnixListener, std::path::PathBuf),
}

impl NbdListener {
    /// Binds `tcp:HOST:PORT` (port 0 picks one; `HOST:PORT` alone also works) or `unix:PATH`
    /// (a stale socket file is replaced).
    pub async fn bind(spec: &str) -> std::io::Result<Self> {
        if let Some(path) = spec.strip_prefix("unix:") {
            let _ = std::fs::remove_file(path);
            Ok(NbdListener::Unix(tokio::net::UnixListener::bind(path)?, path.into()))
        } else {
            let addr = spec.strip_prefix("tcp:").unwrap_or(spec);
            Ok(NbdListener::Tcp(tokio::net::TcpListener::bind(addr).await?))
        }
    }

    /// What was bound, as `tcp:ADDR` or `unix:PATH`.
    pub fn describe(&self) -> String {
        match self {
            NbdListener::Tcp(l) => format!("tcp:{}", l.local_addr().map_or_else(|_| "?".into(), |a| a.to_string())),
            NbdListener::Unix(_, path) => format!("unix:{}", path.display()),
        }
    }

    /// Serves `exports` to every client that connects, within `limits`, until the task is
    /// dropped.
    pub async fn serve(&self, exports: Arc<Vec<Export>>, limits: Limits) {
        let budget = Budget::new(limits);
        loop {
            let accepted = match self {
                NbdListener::Tcp(l) => l.accept().await.map(|(s, peer)| {
                    // Replies are header then data in one write, but requests pipeline: no Nagle.
                    let _ = s.set_nodelay(true);
                    admit(s, peer.to_string(), &exports, &budget);
                }),
                NbdListener::Unix(l, _) => l.accept().await.map(|(s, _)| {
                    admit(s, "unix".into(), &exports, &budget);
                }),
            };
            if let Err(e) = accepted {
                tracing::warn!(error = %e, "NBD accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

impl Drop for NbdListener {
    fn drop(&mut self) {
        if let NbdListener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Serves a new connection unless the server is at its connection limit (then it is closed).
fn admit<S>(stream: S, peer: String, exports: &Arc<Vec<Export>>, budget: &Budget)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Ok(slot) = budget.connections.clone().try_acquire_owned() else {
        tracing::warn!(%peer, max = budget.limits.max_connections, "NBD connection refused: at the connection limit");
        return;
    };
    let (exports, budget) = (exports.clone(), budget.clone());
    tokio::spawn(async move {
        let _slot = slot;
        log_end(serve_connection(stream, exports, budget), peer).await;
    });
}

async fn log_end(connection: impl std::future::Future<Output = std::io::Result<()>>, peer: String) {
    if let Err(e) = connection.await {
        tracing::debug!(%peer, error = %e, "NBD connection ended with an error");
    }
}

/// Read buffers reused across a connection's requests: a fresh 1 MiB buffer per READ costs a
/// memset and, for large sizes, page faults. A reused buffer needs no zeroing: `read_at`
/// overwrites every byte it returns.
#[derive(Debug, Default)]
struct BufferPool(std::sync::Mutex<Vec<Vec<u8>>>);

impl BufferPool {
    /// Buffers kept for reuse (enough for a client's usual queue depth).
    const KEEP: usize = 32;

    fn take(&self, len: usize) -> Vec<u8> {
        let mut buf = self.0.lock().expect("buffer pool poisoned").pop().unwrap_or_default();
        buf.resize(len, 0);
        buf
    }

    fn give_back(&self, buf: Vec<u8>) {
        let mut pool = self.0.lock().expect("buffer pool poisoned");
        if pool.len() < Self::KEEP && buf.capacity() <= MAX_REQUEST as usize {
            pool.push(buf);
        }
    }
}
