//! The CLI side of the admin socket.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use serde_json::Value;

use super::{AdminError, Progress, Request, Response};

/// What happened when the CLI tried the socket.
pub(crate) enum Reached {
    /// A server answered.
    Answered(Result<Value, AdminError>),
    /// No server listens on this data directory.
    NoServer,
}

/// Sends `req` to the server listening at `socket`, if there is one.
pub(crate) fn try_send(socket: &Path, req: &Request) -> std::io::Result<Reached> {
    try_send_with_progress(socket, req, &mut |_| {})
}

/// As [`try_send`], handing each progress report of a long command to `progress`.
pub(crate) fn try_send_with_progress(
    socket: &Path,
    req: &Request,
    progress: &mut dyn FnMut(Progress),
) -> std::io::Result<Reached> {
    let mut stream = match UnixStream::connect(socket) {
        Ok(s) => s,
        // No socket, or a stale one left by a killed server.
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => {
            return Ok(Reached::NoServer)
        }
        Err(e) => return Err(e),
    };
    let mut line = serde_json::to_vec(req).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut replies = BufReader::new(stream);
    loop {
        let mut reply = String::new();
        replies.read_line(&mut reply)?;
        if reply.is_empty() {
            return Err(std::io::Error::new(
                ErrorKind::UnexpectedEof,
                "the server closed the admin connection",
            ));
        }
        match serde_json::from_str::<Response>(&reply).map_err(std::io::Error::other)? {
            Response::Ok(v) => return Ok(Reached::Answered(Ok(v))),
            Response::Error(e) => return Ok(Reached::Answered(Err(e))),
            Response::Progress(p) => progress(p),
        }
    }
}
