//! The HTTP side of downloads: one blocking client (ureq with rustls; proxies from `HTTPS_PROXY`,
//! `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY`), `HEAD` requests that stop at a redirect so its headers can be
//! read, and resumable downloads into a partial file.

use crate::{HubError, Progress, Result};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;
use ureq::http::HeaderMap;
use ureq::Agent;

/// The shared client. A redirect never carries the `Authorization` header (ureq's default), so a token
/// goes only to the host it was given for.
fn agent() -> &'static Agent {
    static AGENT: OnceLock<Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(concat!("effnet/", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(Duration::from_secs(20)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .build()
            .into()
    })
}

/// A response's status and headers.
pub(crate) struct Head {
    /// HTTP status.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
}

impl Head {
    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The error for a request that did not reach the server.
fn unreachable(url: &str, e: ureq::Error, hint: &str) -> HubError {
    HubError::Network(format!("cannot reach {url}: {e}{hint}"))
}

/// `request` with the bearer `token`, when there is one.
fn authorized<B>(request: ureq::RequestBuilder<B>, token: Option<&str>) -> ureq::RequestBuilder<B> {
    match token {
        Some(token) => request.header("Authorization", format!("Bearer {token}")),
        None => request,
    }
}

/// `HEAD url`, not following redirects (their `Location` and headers are what the caller reads).
pub(crate) fn head(url: &str, token: Option<&str>, hint: &str) -> Result<Head> {
    let request = agent()
        .head(url)
        .header("Accept-Encoding", "identity")
        .config()
        .max_redirects(0)
        .build();
    let response = authorized(request, token)
        .call()
        .map_err(|e| unreachable(url, e, hint))?;
    Ok(Head {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
    })
}

/// How many times a download that breaks off is resumed before giving up.
const ATTEMPTS: usize = 4;

/// One file to download: from `url` (with the bearer `token` on the first request, never on redirects)
/// into `partial`, `size` bytes when known; `what` names it on the progress bar and `hint` ends the
/// message when the server cannot be reached.
pub(crate) struct Download<'a> {
    pub url: &'a str,
    pub token: Option<&'a str>,
    pub partial: &'a Path,
    pub size: Option<u64>,
    pub what: &'a str,
    pub hint: &'a str,
}

impl Download<'_> {
    /// Downloads into `partial`, continuing a partial file left by an interrupted download when the
    /// server honours the range (and resuming by itself, a few times, when the transfer breaks off), and
    /// checks that it holds `size` bytes when the size is known.
    pub(crate) fn run(&self, progress: &dyn Progress) -> Result<()> {
        let mut broke = String::new();
        for _ in 0..ATTEMPTS {
            match self.attempt(progress)? {
                Transfer::Complete => return Ok(()),
                Transfer::BrokeOff(reason) => broke = reason,
            }
        }
        Err(HubError::Network(format!(
            "{}: the download broke off {ATTEMPTS} times ({broke}); run again to resume it",
            self.url
        )))
    }

    /// One request, appending to what `partial` holds.
    fn attempt(&self, progress: &dyn Progress) -> Result<Transfer> {
        let Download {
            url,
            token,
            partial,
            size,
            what,
            hint,
        } = *self;
        let have = std::fs::metadata(partial).map_or(0, |m| m.len());
        if have > 0 && size == Some(have) {
            return Ok(Transfer::Complete);
        }
        let mut request = authorized(
            agent().get(url).header("Accept-Encoding", "identity"),
            token,
        );
        if have > 0 {
            request = request.header("Range", format!("bytes={have}-"));
        }
        let mut response = request.call().map_err(|e| unreachable(url, e, hint))?;
        let status = response.status().as_u16();
        let resumed = status == 206;
        if !resumed && status != 200 {
            return Err(HubError::Network(format!(
                "{url}: the server answered {status}"
            )));
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(resumed)
            .truncate(!resumed)
            .open(partial)
            .map_err(|e| HubError::io(partial, e))?;
        let mut written = if resumed { have } else { 0 };
        progress.start(what, size, written);
        let mut reader = response.body_mut().as_reader();
        let mut buffer = vec![0u8; 1 << 16];
        let outcome = loop {
            let n = match reader.read(&mut buffer) {
                Ok(0) => break Transfer::Complete,
                Ok(n) => n,
                Err(e) => break Transfer::BrokeOff(e.to_string()),
            };
            if size.is_some_and(|s| written + n as u64 > s) {
                progress.finish();
                let _ = std::fs::remove_file(partial);
                return Err(HubError::Corrupt(format!(
                    "{url}: the server sent more than the {} bytes it announced",
                    size.unwrap_or(0)
                )));
            }
            file.write_all(&buffer[..n])
                .map_err(|e| HubError::io(partial, e))?;
            written += n as u64;
            progress.advance(n as u64);
        };
        progress.finish();
        file.sync_all().map_err(|e| HubError::io(partial, e))?;
        Ok(match (outcome, size) {
            (Transfer::Complete, Some(size)) if written < size => {
                Transfer::BrokeOff(format!("{written} of {size} bytes arrived"))
            }
            (outcome, _) => outcome,
        })
    }
}

/// How one request of a download ended.
enum Transfer {
    /// Every byte arrived.
    Complete,
    /// The connection ended early, for this reason; the bytes so far are kept.
    BrokeOff(String),
}
