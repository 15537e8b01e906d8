//! `--metrics-listen ADDR`: Prometheus text format on `GET /metrics` (axum, already in the
//! tree through tonic). Anything else is 404. Read-only; bind it to a local or management address.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use axum::Router;
use tracing::{error, info};

/// Binds now (a taken port fails the start) and serves in the background.
pub async fn spawn(addr: SocketAddr) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("--metrics-listen {addr}: bind"))?;
    let app = Router::new().route(
        "/metrics",
        get(|| async {
            (
                [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                crate::obs::render(),
            )
        }),
    );
    info!(%addr, "serving Prometheus metrics on /metrics");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            error!("metrics server: {e}");
        }
    });
    Ok(())
}
