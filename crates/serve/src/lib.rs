//! `effnet serve`: an HTTP server for an EfficientNet. Images arrive as request bodies or multipart
//! uploads, are decoded on a bounded worker pool, and are classified in dynamic batches (requests arriving
//! within a short delay run through the engine's batched path together). It answers `predict`-style JSON,
//! Grad-CAM explanations, embeddings and the KServe v2 inference protocol, reports Prometheus metrics,
//! and serves a web page. Everything is bounded: body size, pixels, queue length and time per request.

pub mod batcher;
pub mod http;
pub mod input;
pub mod kserve;
pub mod metrics;
pub mod model;
pub mod routes;

pub use model::Model;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Most images run through the engine together.
    pub max_batch: usize,
    /// How long the first request of a batch waits for others to join it.
    pub max_delay: Duration,
    /// Most images waiting for the engine; more are refused with 503 and `Retry-After`.
    pub queue: usize,
    /// Longest a request may take before it is answered with 504.
    pub timeout: Duration,
    /// Largest request body, in bytes (413 above).
    pub max_body: usize,
    /// Most images decoded at once.
    pub decoders: usize,
    /// A bearer token every request but the page and the health checks must carry.
    pub token: Option<String>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            max_batch: 16,
            max_delay: Duration::from_millis(5),
            queue: 64,
            timeout: Duration::from_secs(30),
            max_body: 32 << 20,
            decoders: std::thread::available_parallelism().map_or(2, |n| n.get()),
            token: None,
        }
    }
}

/// Serves `model` on `listener` until `shutdown` completes, then finishes the requests in flight.
pub async fn serve(
    model: Model,
    config: ServeConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = Arc::new(routes::AppState::new(model, config));
    let app = routes::router(state.clone());
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    state.batcher.close();
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
