//! The admin socket server run by `sealstore serve`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::{debug, warn};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::{execute_job, AdminError, AdminTarget, Job, Progress, Request, Response};

/// Largest request line accepted (requests are small JSON documents).
const MAX_LINE: usize = 1 << 20;

/// Binds the socket at `path` (replacing a stale one left by a crash) with mode 0600.
pub(crate) fn bind(path: &Path) -> std::io::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves admin requests until the task is dropped. Only processes of the user that owns the
/// socket (this server's user) or root are answered, by the peer credentials of each
/// connection — on top of the socket's mode 0600.
pub(crate) async fn serve(listener: UnixListener, target: AdminTarget, socket_path: PathBuf) {
    use std::os::unix::fs::MetadataExt;
    let owner = match std::fs::metadata(&socket_path) {
        Ok(m) => m.uid(),
        Err(e) => {
            warn!(socket = %socket_path.display(), error = %e, "admin socket vanished; not serving it");
            return;
        }
    };
    loop {
        match listener.accept().await {
            Ok((stream, _)) => match stream.peer_cred() {
                Ok(peer) if peer.uid() == owner || peer.uid() == 0 => {
                    tokio::spawn(handle(stream, target.clone()));
                }
                Ok(peer) => {
                    warn!(
                        uid = peer.uid(),
                        owner, "admin socket: refused a connection from another user"
                    );
                    tokio::spawn(refuse(stream, "the admin socket answers only its owner"));
                }
                Err(e) => warn!(error = %e, "admin socket: cannot read the peer's credentials"),
            },
            Err(e) => {
                warn!(socket = %socket_path.display(), error = %e, "admin socket accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle(stream: UnixStream, target: AdminTarget) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read.take(MAX_LINE as u64 + 1)).lines();
    let response = match lines.next_line().await {
        Ok(Some(line)) => match serde_json::from_str::<Request>(&line) {
            Ok(req) => {
                debug!(op = ?std::mem::discriminant(&req), "admin request");
                let stop = Arc::new(AtomicBool::new(false));
                let job_stop = stop.clone();
                let (progress_tx, mut progress_rx) = tokio::sync::watch::channel(None::<Progress>);
                let mut job = tokio::task::spawn_blocking(move || {
                    let report = |p: Progress| {
                        progress_tx.send_replace(Some(p));
                    };
                    execute_job(
                        &target,
                        req,
                        &Job {
                            stop: &job_stop,
                            progress: &report,
                        },
                    )
                });
                // A client that goes away (Ctrl-C, kill) stops what it started; meanwhile it
                // hears how far the job has come, ten times a second at most.
                let mut probe = [0u8; 1];
                let mut gone = false;
                let mut tick = tokio::time::interval(PROGRESS_INTERVAL);
                let done = loop {
                    tokio::select! {
                        done = &mut job => break done,
                        n = lines.get_mut().read(&mut probe), if !gone => {
                            if matches!(n, Ok(0) | Err(_)) {
                                gone = true;
                                stop.store(true, Ordering::Relaxed);
                            }
                        }
                        _ = tick.tick(), if !gone => {
                            if progress_rx.has_changed().unwrap_or(false) {
                                let latest = *progress_rx.borrow_and_update();
                                if let Some(p) = latest {
                                    if write_line(&mut write, &Response::Progress(p)).await.is_err() {
                                        gone = true;
                                        stop.store(true, Ordering::Relaxed);
                                    }
                                }
                            }
                        }
                    }
                };
                match done {
                    Ok(Ok(v)) => Response::Ok(v),
                    Ok(Err(e)) => Response::Error(e),
                    Err(e) => Response::Error(AdminError {
                        code: "InternalServerError".into(),
                        message: e.to_string(),
                    }),
                }
            }
            Err(e) => Response::Error(AdminError {
                code: "InvalidParameter".into(),
                message: format!("malformed admin request: {e}"),
            }),
        },
        Ok(None) => return,
        Err(e) => Response::Error(AdminError {
            code: "InvalidParameter".into(),
            message: format!("unreadable request: {e}"),
        }),
    };
    let _ = write_line(&mut write, &response).await;
}

/// How often a long job's progress goes to its client.
const PROGRESS_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

async fn write_line(write: &mut (impl tokio::io::AsyncWrite + Unpin), response: &Response) -> std::io::Result<()> {
    let mut out = serde_json::to_vec(response).expect("responses serialize");
    out.push(b'\n');
    write.write_all(&out).await
}

async fn refuse(mut stream: UnixStream, why: &str) {
    let response = Response::Error(AdminError {
        code: "NotAuthorized".into(),
        message: why.into(),
    });
    let mut out = serde_json::to_vec(&response).expect("responses serialize");
    out.push(b'\n');
    let _ = stream.write_all(&out).await;
}
