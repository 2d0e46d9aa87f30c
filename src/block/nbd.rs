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
//! After the handshake (on tokio) a connection has a thread of its own, which reads requests
//! in large chunks and serves small READs and WRITEs itself, and up to `WORKERS` threads for
//! the rest; replies are written in batches (see `INLINE_REQUEST` and `docs/FORMATS.md`).
//! Any byte alignment is accepted (the volume reads, modifies and writes partial sectors).
//! FLUSH and FUA mean durable: the volume file is fdatasync'ed.
//! Resources are bounded ([`Limits`]): bytes of requests in flight per connection and per
//! server (back-pressure: the server stops reading a client's requests), connections, and the
//! time to negotiate and to sit idle.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
pub(crate) const MAX_REQUEST: u32 = 32 << 20;
/// Option payloads above this end the handshake.
const MAX_OPTION: u32 = 64 << 10;

/// How long a client may take to negotiate (hello to GO or EXPORT_NAME).
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// What clients may hold of a server. Requests in flight are counted in bytes (a READ's
/// buffer, a WRITE's payload; at least 1 KiB each): at a connection's limit, or the server's,
/// the server stops reading that connection's requests until replies drain — back-pressure,
/// not an error — so a client that never reads its replies holds at most its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
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
pub(crate) struct Budget {
    limits: Limits,
    /// KiB in flight across connections.
    total: Arc<Semaphore>,
    connections: Arc<Semaphore>,
}

impl Budget {
    /// Counters for `limits` (raised to their minimums).
    pub(crate) fn new(limits: Limits) -> Self {
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
pub(crate) struct Export {
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

/// A client connection as accepted.
#[derive(Debug)]
pub(crate) enum Stream {
    /// Over a Unix socket.
    Unix(tokio::net::UnixStream),
    /// Over TCP.
    Tcp(tokio::net::TcpStream),
}

/// Serves one client connection until it disconnects: the handshake on tokio, then the
/// transmission phase on a thread of its own (with workers; see `INLINE_REQUEST`).
pub(crate) async fn serve_connection(
    mut stream: Stream,
    exports: Arc<Vec<Export>>,
    budget: Budget,
) -> std::io::Result<()> {
    let negotiated = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        let chosen = match &mut stream {
            Stream::Unix(s) => {
                let (r, w) = s.split();
                handshake(r, w, &exports).await?.map(|(_, _, e, n)| (e, n))
            }
            Stream::Tcp(s) => {
                let (r, w) = s.split();
                handshake(r, w, &exports).await?.map(|(_, _, e, n)| (e, n))
            }
        };
        Ok::<_, std::io::Error>(chosen)
    })
    .await;
    let Ok(negotiated) = negotiated else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no export chosen within {} s", HANDSHAKE_TIMEOUT.as_secs()),
        ));
    };
    let Some((export, negotiated)) = negotiated? else {
        return Ok(());
    };
    let socket = match stream {
        Stream::Unix(s) => {
            let s = s.into_std()?;
            s.set_nonblocking(false)?;
            Socket::Unix(s)
        }
        Stream::Tcp(s) => {
            let s = s.into_std()?;
            s.set_nonblocking(false)?;
            Socket::Tcp(s)
        }
    };
    // Should this task be dropped (the runtime shutting down on SIGTERM), the socket is shut
    // down so that the connection's threads end too, instead of holding the process open.
    let _close = CloseOnDrop(socket.try_clone()?);
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || transmission(socket, export, negotiated, budget, runtime))
        .await
        .map_err(std::io::Error::other)?
}

/// Shuts a socket down when dropped.
struct CloseOnDrop(Socket);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.shutdown();
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
    /// The reply header to `cookie`: success (a READ's `len` bytes of data at `offset` follow
    /// it), or `error`.
    fn head(self, cookie: u64, error: u32, read: Option<(u64, usize)>) -> Vec<u8> {
        let mut out = Vec::with_capacity(32);
        if !self.structured {
            out.extend_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
            out.extend_from_slice(&error.to_be_bytes());
            out.extend_from_slice(&cookie.to_be_bytes());
            return out;
        }
        let message: &[u8] = match error {
            EPERM => b"the export is read-only",
            EINVAL => b"invalid request",
            ENOSPC => b"beyond the end of the volume",
            EOVERFLOW => b"request too large",
            ENOTSUP => b"zeroing without holes is not fast here",
            _ => b"I/O error on the volume",
        };
        let (kind, payload_len) = match (error, read) {
            (0, Some((_, len))) => (REPLY_TYPE_OFFSET_DATA, 8 + len),
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
        out
    }

    /// The `base:allocation` answer to a BLOCK_STATUS (structured replies only, which the
    /// context's negotiation required): one chunk of (length, flags) descriptors.
    fn block_status(self, cookie: u64, extents: &[(u64, bool)]) -> Vec<u8> {
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
        out
    }
}

fn errno(e: &super::VolumeError) -> u32 {
    match e {
        super::VolumeError::OutOfRange { .. } => ENOSPC,
        super::VolumeError::Invalid(_) => EINVAL,
        _ => EIO,
    }
}

fn status(done: Result<(), super::VolumeError>) -> u32 {
    done.err().map_or(0, |e| errno(&e))
}

/// READ and WRITE requests up to this size, without FUA, are served on the connection's own
/// thread as soon as they are read, and their replies batched into one write per read of the
/// socket: no hand-over to another thread per request. Larger ones, FUA, FLUSH, TRIM,
/// WRITE_ZEROES and BLOCK_STATUS go to the connection's workers, so that big transfers use
/// every core and a sync never stalls the reading of requests.
const INLINE_REQUEST: u32 = 64 << 10;
/// Worker threads per connection (started when first needed).
const WORKERS: usize = 4;
/// Bytes read from the socket at a time: many small requests per read.
const READ_BUFFER: usize = 256 << 10;
/// Replies gathered into one `sendmsg` at most (below IOV_MAX with two slices each).
const MAX_BATCH: usize = 256;
/// A request header.
const HEADER: usize = 28;
/// Socket send buffer asked for.
const SEND_BUFFER: usize = 4 << 20;

/// Budget permits a request holds until its reply is written.
type Held = (OwnedSemaphorePermit, OwnedSemaphorePermit);

/// A reply ready to be written: its header (with a small READ's data), a large READ's data,
/// how much of both is written, and the budget it holds.
struct Reply {
    head: Vec<u8>,
    data: Option<Vec<u8>>,
    sent: usize,
    _held: Option<Held>,
}

impl Reply {
    fn new(head: Vec<u8>, held: Option<Held>) -> Self {
        Reply {
            head,
            data: None,
            sent: 0,
            _held: held,
        }
    }

    fn len(&self) -> usize {
        self.head.len() + self.data.as_ref().map_or(0, Vec::len)
    }
}

/// A client's socket in the transmission phase, in blocking mode.
#[derive(Debug)]
enum Socket {
    Unix(std::os::unix::net::UnixStream),
    Tcp(std::net::TcpStream),
}

impl Socket {
    fn try_clone(&self) -> std::io::Result<Socket> {
        Ok(match self {
            Socket::Unix(s) => Socket::Unix(s.try_clone()?),
            Socket::Tcp(s) => Socket::Tcp(s.try_clone()?),
        })
    }

    fn set_read_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        match self {
            Socket::Unix(s) => s.set_read_timeout(timeout),
            Socket::Tcp(s) => s.set_read_timeout(timeout),
        }
    }

    fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::io::Read;
        match self {
            Socket::Unix(s) => (&*s).read(buf),
            Socket::Tcp(s) => (&*s).read(buf),
        }
    }

    fn shutdown(&self) {
        let _ = match self {
            Socket::Unix(s) => s.shutdown(std::net::Shutdown::Both),
            Socket::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }
}

impl std::os::fd::AsFd for Socket {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Socket::Unix(s) => s.as_fd(),
            Socket::Tcp(s) => s.as_fd(),
        }
    }
}

/// The replies of a connection on their way out. Whoever finds no one writing writes every
/// queued reply, in batches of one `sendmsg` each (flat combining): replies finished while a
/// write is under way go out with the next one. The connection's reading thread writes
/// without blocking (so it never stops reading requests because a client is slow to read
/// replies) and leaves what does not fit to a worker.
struct Out {
    socket: Socket,
    state: std::sync::Mutex<OutState>,
    buffers: BufferPool,
}

#[derive(Default)]
struct OutState {
    queue: VecDeque<Reply>,
    writing: bool,
    failed: bool,
}

/// How [`Out::write_out`] ended.
#[derive(Debug, PartialEq, Eq)]
enum Drained {
    Done,
    WouldBlock,
    Failed,
}

impl Out {
    fn state(&self) -> std::sync::MutexGuard<'_, OutState> {
        self.state.lock().expect("NBD reply queue poisoned")
    }

    /// Queues replies; true when the caller is to write them (no one else is).
    fn push(&self, replies: impl IntoIterator<Item = Reply>) -> bool {
        let mut st = self.state();
        if st.failed {
            return false;
        }
        st.queue.extend(replies);
        self.take_role(&mut st)
    }

    fn take_role(&self, st: &mut OutState) -> bool {
        if st.writing || st.failed || st.queue.is_empty() {
            return false;
        }
        st.writing = true;
        true
    }

    /// Takes the writer's role if no one has it and something is queued.
    fn claim(&self) -> bool {
        let mut st = self.state();
        self.take_role(&mut st)
    }

    /// Writes queued replies until none is left, then gives up the writer's role (which the
    /// caller holds). Without `blocking`, stops when the socket is full, putting back what
    /// is left.
    fn write_out(&self, blocking: bool) -> Drained {
        loop {
            let mut batch: Vec<Reply> = {
                let mut st = self.state();
                if st.queue.is_empty() {
                    st.writing = false;
                    return Drained::Done;
                }
                let n = st.queue.len().min(MAX_BATCH);
                st.queue.drain(..n).collect()
            };
            match self.send(&mut batch, blocking) {
                Ok(()) => {
                    for reply in batch {
                        if let Some(data) = reply.data {
                            self.buffers.give_back(data);
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let mut st = self.state();
                    for reply in batch.into_iter().rev().filter(|r| r.sent < r.len()) {
                        st.queue.push_front(reply);
                    }
                    st.writing = false;
                    return Drained::WouldBlock;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "NBD reply failed");
                    let mut st = self.state();
                    st.failed = true;
                    st.queue.clear();
                    st.writing = false;
                    return Drained::Failed;
                }
            }
        }
    }

    /// Writes a batch of replies with as few `sendmsg` calls as the socket allows.
    fn send(&self, batch: &mut [Reply], blocking: bool) -> std::io::Result<()> {
        use rustix::net::{SendAncillaryBuffer, SendFlags};
        let flags = if blocking {
            SendFlags::NOSIGNAL
        } else {
            SendFlags::NOSIGNAL | SendFlags::DONTWAIT
        };
        let mut first = 0;
        loop {
            while first < batch.len() && batch[first].sent == batch[first].len() {
                first += 1;
            }
            if first == batch.len() {
                return Ok(());
            }
            let mut iov = Vec::with_capacity(2 * (batch.len() - first));
            for r in &batch[first..] {
                let head = r.head.get(r.sent..).unwrap_or(&[]);
                if !head.is_empty() {
                    iov.push(std::io::IoSlice::new(head));
                }
                if let Some(data) = &r.data {
                    iov.push(std::io::IoSlice::new(&data[r.sent.saturating_sub(r.head.len())..]));
                }
            }
            let sent = rustix::net::sendmsg(&self.socket, &iov, &mut SendAncillaryBuffer::default(), flags);
            drop(iov);
            let mut n = match sent {
                Ok(n) => n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            };
            for r in &mut batch[first..] {
                let step = (r.len() - r.sent).min(n);
                r.sent += step;
                n -= step;
                if n == 0 {
                    break;
                }
            }
        }
    }
}

/// A parsed request header.
#[derive(Debug, Clone, Copy)]
struct Request {
    flags: u16,
    kind: u16,
    cookie: u64,
    offset: u64,
    len: u32,
}

impl Request {
    fn parse(header: &[u8]) -> (u32, Self) {
        let magic = u32::from_be_bytes(header[0..4].try_into().expect("4"));
        let request = Request {
            flags: u16::from_be_bytes(header[4..6].try_into().expect("2")),
            kind: u16::from_be_bytes(header[6..8].try_into().expect("2")),
            cookie: u64::from_be_bytes(header[8..16].try_into().expect("8")),
            offset: u64::from_be_bytes(header[16..24].try_into().expect("8")),
            len: u32::from_be_bytes(header[24..28].try_into().expect("4")),
        };
        (magic, request)
    }

    fn fua(&self) -> bool {
        self.flags & CMD_FLAG_FUA != 0
    }

    /// Served on the reading thread (see [`INLINE_REQUEST`]).
    fn inline(&self) -> bool {
        matches!(self.kind, CMD_READ | CMD_WRITE) && self.len <= INLINE_REQUEST && !self.fua()
    }
}

/// Work for a connection's workers.
enum Job {
    /// A request (with a WRITE's payload) and the budget it holds.
    Request(Request, Vec<u8>, Held),
    /// Write queued replies (the reading thread found the socket full).
    Drain,
}

#[derive(Default)]
struct Jobs {
    queue: VecDeque<Job>,
    idle: usize,
    workers: usize,
    closed: bool,
}

/// What a connection's threads share.
struct Connection {
    export: Export,
    replies: Replies,
    allocation_context: bool,
    out: Out,
    jobs: std::sync::Mutex<Jobs>,
    ready: std::sync::Condvar,
}

impl Connection {
    fn jobs(&self) -> std::sync::MutexGuard<'_, Jobs> {
        self.jobs.lock().expect("NBD job queue poisoned")
    }

    /// Queues a job for the workers, starting one if none is idle (up to [`WORKERS`]).
    fn submit(self: &Arc<Self>, job: Job) -> Option<std::thread::JoinHandle<()>> {
        let mut jobs = self.jobs();
        jobs.queue.push_back(job);
        if jobs.idle > 0 {
            self.ready.notify_one();
            return None;
        }
        if jobs.workers >= WORKERS {
            return None;
        }
        let conn = self.clone();
        let started = std::thread::Builder::new()
            .name("nbd-worker".into())
            .spawn(move || conn.work());
        match started {
            Ok(handle) => {
                jobs.workers += 1;
                Some(handle)
            }
            // Without a thread the job still runs: on an existing worker, or, with none, on
            // the reading thread when the connection ends.
            Err(e) => {
                tracing::warn!(error = %e, "could not start an NBD worker thread");
                None
            }
        }
    }

    fn work(&self) {
        loop {
            let job = {
                let mut jobs = self.jobs();
                loop {
                    if let Some(job) = jobs.queue.pop_front() {
                        break job;
                    }
                    if jobs.closed {
                        return;
                    }
                    jobs.idle += 1;
                    jobs = self.ready.wait(jobs).expect("NBD job queue poisoned");
                    jobs.idle -= 1;
                }
            };
            self.run(job);
        }
    }

    fn run(&self, job: Job) {
        match job {
            Job::Request(request, mut data, held) => {
                let reply = self.serve(request, &mut data, Some(held));
                if !data.is_empty() {
                    self.out.buffers.give_back(data);
                }
                self.reply(reply);
            }
            Job::Drain => {
                if self.out.claim() {
                    self.out.write_out(true);
                }
            }
        }
    }

    /// Queues a reply and, if no one is writing, writes (blocking: not on the reading thread).
    fn reply(&self, reply: Reply) {
        if self.out.push([reply]) {
            self.out.write_out(true);
        }
    }

    /// Serves one request (a WRITE's payload in `data`, encrypted in place).
    fn serve(&self, request: Request, data: &mut [u8], held: Option<Held>) -> Reply {
        let Request {
            flags,
            kind,
            cookie,
            offset,
            len,
        } = request;
        let vol = &self.export.volume;
        let replies = self.replies;
        let in_range = offset.checked_add(u64::from(len)).is_some_and(|end| end <= vol.size());
        let fua = request.fua();
        let error = |e: u32| Reply::new(replies.head(cookie, e, None), None);
        match kind {
            CMD_WRITE => {
                let e = if self.export.read_only {
                    EPERM
                } else if !in_range {
                    ENOSPC
                } else {
                    status(
                        vol.write_at_in_place(offset, data)
                            .and_then(|()| if fua { vol.flush() } else { Ok(()) }),
                    )
                };
                Reply::new(replies.head(cookie, e, None), held)
            }
            CMD_READ => {
                if len > MAX_REQUEST || !in_range {
                    return error(EINVAL);
                }
                let len = len as usize;
                if len <= INLINE_REQUEST as usize {
                    // Header and data in one buffer.
                    let mut out = replies.head(cookie, 0, Some((offset, len)));
                    let at = out.len();
                    out.resize(at + len, 0);
                    return match vol.read_at(offset, &mut out[at..]) {
                        Ok(()) => Reply::new(out, held),
                        Err(e) => Reply::new(replies.head(cookie, errno(&e), None), held),
                    };
                }
                let mut buf = self.out.buffers.take(len);
                match vol.read_at(offset, &mut buf) {
                    Ok(()) => Reply {
                        data: Some(buf),
                        ..Reply::new(replies.head(cookie, 0, Some((offset, len))), held)
                    },
                    Err(e) => {
                        self.out.buffers.give_back(buf);
                        Reply::new(replies.head(cookie, errno(&e), None), held)
                    }
                }
            }
            CMD_FLUSH => Reply::new(replies.head(cookie, status(vol.flush()), None), held),
            CMD_TRIM | CMD_WRITE_ZEROES => {
                if self.export.read_only || !in_range {
                    return error(if self.export.read_only { EPERM } else { ENOSPC });
                }
                // WRITE_ZEROES with NO_HOLE must stay allocated: encrypted zeros are written.
                // Otherwise (and for TRIM) the range is punched: it reads as zeros and its
                // space is freed.
                let keep_allocated = kind == CMD_WRITE_ZEROES && flags & CMD_FLAG_NO_HOLE != 0;
                // FAST_ZERO: fail at once rather than be slow. Punching is fast; writing
                // encrypted zeros (NO_HOLE) is not.
                if kind == CMD_WRITE_ZEROES && keep_allocated && flags & CMD_FLAG_FAST_ZERO != 0 {
                    return error(ENOTSUP);
                }
                let done = (|| {
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
                })();
                Reply::new(replies.head(cookie, status(done), None), held)
            }
            CMD_BLOCK_STATUS => {
                if !self.allocation_context || !in_range || len == 0 {
                    return error(EINVAL);
                }
                match vol.allocation(offset, u64::from(len)) {
                    Ok(mut extents) => {
                        if flags & CMD_FLAG_REQ_ONE != 0 {
                            extents.truncate(1);
                        }
                        Reply::new(replies.block_status(cookie, &extents), held)
                    }
                    Err(e) => Reply::new(replies.head(cookie, errno(&e), None), held),
                }
            }
            _ => error(EINVAL),
        }
    }
}

/// The transmission phase of a connection, on its own (blocking) thread: reads requests in
/// large chunks, serves small READs and WRITEs there and then, hands the rest to workers,
/// and writes replies in batches.
fn transmission(
    socket: Socket,
    export: Export,
    negotiated: Negotiated,
    budget: Budget,
    runtime: tokio::runtime::Handle,
) -> std::io::Result<()> {
    // Room for a whole large READ reply in the socket (as far as net.core.wmem_max allows):
    // a 1 MiB reply then goes out in one call instead of trickling through the default
    // ~200 KiB, a wake-up of the client per piece.
    let _ = rustix::net::sockopt::set_socket_send_buffer_size(&socket, SEND_BUFFER);
    let reader = socket.try_clone()?;
    let conn = Arc::new(Connection {
        export,
        replies: Replies {
            structured: negotiated.structured,
        },
        allocation_context: negotiated.allocation_context,
        out: Out {
            socket,
            state: Default::default(),
            buffers: BufferPool::default(),
        },
        jobs: Default::default(),
        ready: Default::default(),
    });
    let own = Arc::new(Semaphore::new(budget.limits.per_connection_bytes >> 10));
    let idle = budget.limits.idle_timeout;
    if idle.is_some() {
        reader.set_read_timeout(idle)?;
    }
    let mut workers = Vec::new();
    let mut buf = vec![0u8; READ_BUFFER];
    let (mut start, mut end) = (0usize, 0usize);
    let mut batch: Vec<Reply> = Vec::new();
    // Requests read whose replies are not queued yet (for the idle timeout).
    let mut last_request = std::time::Instant::now();

    // Queues the batch and writes what the socket takes now; a worker writes the rest.
    let flush = |batch: &mut Vec<Reply>, workers: &mut Vec<std::thread::JoinHandle<()>>| {
        if conn.out.push(batch.drain(..)) && conn.out.write_out(false) == Drained::WouldBlock {
            workers.extend(conn.submit(Job::Drain));
        }
    };

    let result: std::io::Result<()> = 'connection: loop {
        // Every whole request in the buffer.
        while end - start >= HEADER {
            let (magic, request) = Request::parse(&buf[start..start + HEADER]);
            if magic != REQUEST_MAGIC {
                break 'connection Err(std::io::Error::other("bad request magic"));
            }
            let len = request.len;
            if request.kind == CMD_WRITE && len > MAX_REQUEST {
                batch.push(Reply::new(conn.replies.head(request.cookie, EOVERFLOW, None), None));
                break 'connection Err(std::io::Error::other("write request too large"));
            }
            let payload = if request.kind == CMD_WRITE { len as usize } else { 0 };
            let inline = request.inline();
            if inline && end - start < HEADER + payload {
                break; // read the rest of its payload first
            }
            if request.kind == CMD_DISC {
                break 'connection Ok(());
            }
            last_request = std::time::Instant::now();
            // Back-pressure: no more of this client's requests are read until what is in
            // flight fits its limit and the server's. Held until the reply is written.
            let cost = if len > MAX_REQUEST {
                1
            } else {
                cost_kib(request.kind, len)
            };
            let held = match (
                own.clone().try_acquire_many_owned(cost),
                budget.total.clone().try_acquire_many_owned(cost),
            ) {
                (Ok(a), Ok(b)) => (a, b),
                (a, b) => {
                    drop((a, b));
                    // This thread's own replies hold budget too: out with them first.
                    flush(&mut batch, &mut workers);
                    runtime.block_on(async {
                        (
                            own.clone().acquire_many_owned(cost).await.expect("never closed"),
                            budget
                                .total
                                .clone()
                                .acquire_many_owned(cost)
                                .await
                                .expect("never closed"),
                        )
                    })
                }
            };
            start += HEADER;
            if inline {
                let data = &mut buf[start..start + payload];
                start += payload;
                batch.push(conn.serve(request, data, Some(held)));
                continue;
            }
            // A large payload: what is buffered, then the rest straight from the socket.
            let mut data = Vec::new();
            if payload > 0 {
                let have = (end - start).min(payload);
                data = conn.out.buffers.take(payload);
                data[..have].copy_from_slice(&buf[start..start + have]);
                start += have;
                if let Err(e) = read_exact(&reader, &mut data[have..]) {
                    break 'connection Err(e);
                }
            }
            workers.extend(conn.submit(Job::Request(request, data, held)));
        }
        flush(&mut batch, &mut workers);
        if conn.out.state().failed {
            break Err(std::io::Error::other("writing a reply failed"));
        }
        // Room for more: keep the partial request at the front.
        if start > 0 {
            buf.copy_within(start..end, 0);
            end -= start;
            start = 0;
        }
        match reader.read(&mut buf[end..]) {
            Ok(0) => break Ok(()),
            Ok(n) => end += n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                let busy = {
                    let jobs = conn.jobs();
                    jobs.queue.len() + jobs.workers - jobs.idle > 0
                };
                let idle = idle.unwrap_or(Duration::MAX);
                if !busy && last_request.elapsed() >= idle {
                    tracing::debug!(idle_secs = idle.as_secs(), "NBD connection idle: closed");
                    break Ok(());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    // Every request received gets its reply before the connection closes.
    let _ = conn.out.push(batch.drain(..));
    conn.jobs().closed = true;
    conn.ready.notify_all();
    for worker in workers {
        let _ = worker.join();
    }
    // Jobs left for want of a thread, then whatever replies are left.
    let left: Vec<Job> = conn.jobs().queue.drain(..).collect();
    for job in left {
        conn.run(job);
    }
    if conn.out.claim() {
        conn.out.write_out(true);
    }
    conn.out.socket.shutdown();
    result
}

/// Reads exactly `buf.len()` bytes, waiting through read timeouts (which are for idleness
/// between requests, not within one).
fn read_exact(socket: &Socket, mut buf: &mut [u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        match socket.read(buf) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => buf = &mut buf[n..],
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Where an NBD server listens: TCP or a Unix socket.
#[derive(Debug)]
pub(crate) enum NbdListener {
    /// A TCP listener.
    Tcp(tokio::net::TcpListener),
    /// A Unix socket, removed when the listener is dropped.
    Unix(tokio::net::UnixListener, std::path::PathBuf),
}

impl NbdListener {
    /// Binds `tcp:HOST:PORT` (port 0 picks one; `HOST:PORT` alone also works) or `unix:PATH`
    /// (a stale socket file is replaced).
    pub(crate) async fn bind(spec: &str) -> std::io::Result<Self> {
        if let Some(path) = spec.strip_prefix("unix:") {
            let _ = std::fs::remove_file(path);
            Ok(NbdListener::Unix(tokio::net::UnixListener::bind(path)?, path.into()))
        } else {
            let addr = spec.strip_prefix("tcp:").unwrap_or(spec);
            Ok(NbdListener::Tcp(tokio::net::TcpListener::bind(addr).await?))
        }
    }

    /// What was bound, as `tcp:ADDR` or `unix:PATH`.
    pub(crate) fn describe(&self) -> String {
        match self {
            NbdListener::Tcp(l) => format!("tcp:{}", l.local_addr().map_or_else(|_| "?".into(), |a| a.to_string())),
            NbdListener::Unix(_, path) => format!("unix:{}", path.display()),
        }
    }

    /// Serves `exports` to every client that connects, within `limits`, until the task is
    /// dropped.
    pub(crate) async fn serve(&self, exports: Arc<Vec<Export>>, limits: Limits) {
        let budget = Budget::new(limits);
        loop {
            let accepted = match self {
                NbdListener::Tcp(l) => l.accept().await.map(|(s, peer)| {
                    // Replies are header then data in one write, but requests pipeline: no Nagle.
                    let _ = s.set_nodelay(true);
                    admit(Stream::Tcp(s), peer.to_string(), &exports, &budget);
                }),
                NbdListener::Unix(l, _) => l.accept().await.map(|(s, _)| {
                    admit(Stream::Unix(s), "unix".into(), &exports, &budget);
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
fn admit(stream: Stream, peer: String, exports: &Arc<Vec<Export>>, budget: &Budget) {
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

/// Buffers for large READs and WRITEs reused across a connection's requests: a fresh 1 MiB
/// buffer per request costs a memset and, for large sizes, page faults. A reused buffer needs
/// no zeroing: `read_at`, or the socket for a WRITE's payload, overwrites every byte.
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
