//! The one HTTP/1.1 accept loop of sealstore's JSON APIs (the KMS API, the reference external
//! key manager): TCP_NODELAY, optional TLS, keep-alive, a task per connection.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;

/// The client's address, in every request's extensions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientAddr(pub std::net::SocketAddr);

/// Accepts connections on `listener` (over TLS with `tls`) and answers each request with
/// `handle`, until the task is dropped. `name` names the server in logs.
pub(crate) async fn serve<H, F>(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    name: &'static str,
    handle: H,
) where
    H: Fn(http::Request<hyper::body::Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = http::Response<Full<Bytes>>> + Send + 'static,
{
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::error!(server = name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Small JSON answers: without NODELAY, Nagle holds each behind the client's ACK.
        let _ = stream.set_nodelay(true);
        let (handle, tls) = (handle.clone(), tls.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ClientAddr(peer));
                let answer = handle(req);
                async move { Ok::<_, std::convert::Infallible>(answer.await) }
            });
            let http = hyper::server::conn::http1::Builder::new();
            let served = match tls {
                None => {
                    http.serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await
                }
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(stream) => {
                        http.serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await
                    }
                    Err(e) => {
                        tracing::debug!(server = name, %peer, error = %e, "TLS handshake failed");
                        return;
                    }
                },
            };
            if let Err(e) = served {
                tracing::debug!(server = name, %peer, error = %e, "connection ended with an error");
            }
        });
    }
}
