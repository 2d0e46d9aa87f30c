//! The front door of the KMS listeners: one address serves the OCI-compatible KMS API and
//! the web console (under [`console::PREFIX`]), or either alone when the console has an
//! address of its own (`serve --console-listen`). Routing lives here, so the console depends
//! on the API and the API knows nothing of the console.

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full, Limited};

use crate::console::{self, Console};
use crate::kms_api::{KmsApi, MAX_BODY};

/// What one listener answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Serves {
    /// The API, and the console under its prefix.
    ApiAndConsole,
    /// The API only: the console has its own address.
    Api,
    /// The console only: API paths answer 404.
    Console,
}

/// One listener's router.
#[derive(Debug)]
pub(crate) struct FrontDoor {
    api: KmsApi,
    console: Arc<Console>,
    serves: Serves,
}

impl FrontDoor {
    /// Serves `api` (and its console) as `serves` says.
    pub(crate) fn new(api: KmsApi, serves: Serves) -> Self {
        FrontDoor {
            api,
            console: Arc::default(),
            serves,
        }
    }

    /// Uses `console` (e.g. [`Console::persistent`]) instead of an in-memory one.
    pub(crate) fn with_console(mut self, console: Arc<Console>) -> Self {
        self.console = console;
        self
    }

    /// Answers one request.
    pub(crate) async fn handle<B>(self: &Arc<Self>, req: http::Request<B>) -> http::Response<Full<Bytes>>
    where
        B: hyper::body::Body + Send,
        B::Data: Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let path = req.uri().path();
        let console_path = path == console::PREFIX || path.starts_with("/console/");
        match (console_path, self.serves) {
            (true, Serves::ApiAndConsole | Serves::Console) => {
                let (parts, body) = req.into_parts();
                let body = match Limited::new(body, MAX_BODY).collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(_) => Bytes::new(),
                };
                let door = self.clone();
                // The console's pages call the KMS synchronously.
                tokio::task::spawn_blocking(move || door.console.handle(&door.api, &parts, &body))
                    .await
                    .unwrap_or_else(|e| {
                        tracing::error!(error = %e, "console handler panicked");
                        let mut r = http::Response::new(Full::new(Bytes::from_static(b"internal error")));
                        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                        r
                    })
            }
            (true, Serves::Api) => self.api.not_found(
                req.headers(),
                format_args!("the console: it is served on its own address (--console-listen)"),
            ),
            (false, Serves::Console) => self.api.not_found(
                req.headers(),
                format_args!("{path}: this address serves only the console, at /console/"),
            ),
            (false, Serves::ApiAndConsole | Serves::Api) => self.api.handle(req).await,
        }
    }

    /// Accepts connections on `listener` and serves them (HTTP/1.1, keep-alive, the API's
    /// TLS) until the task is dropped.
    pub(crate) async fn serve(self, listener: tokio::net::TcpListener) {
        let tls = self.api.tls().cloned();
        let name = match self.serves {
            Serves::Console => "console",
            Serves::ApiAndConsole | Serves::Api => "KMS API",
        };
        let door = Arc::new(self);
        crate::http_server::serve(listener, tls, name, move |req| {
            let door = door.clone();
            async move { door.handle(req).await }
        })
        .await
    }
}
