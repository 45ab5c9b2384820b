//! `effnet serve`: the HTTP server of [`effnet_serve`] on the command line's weights.

use crate::inference::PreprocessArgs;
use crate::model_args::parse_count;
use crate::weights_args::WeightsArgs;
use anyhow::{Context, Result};
use clap::Args;
use effnet_serve::{serve, shutdown_signal, Model, ServeConfig};
use std::path::PathBuf;
use std::time::Duration;

/// Arguments of `effnet serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    weights: WeightsArgs,
    /// Address to listen on (port 0 picks a free one; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// Most images run through the network together.
    #[arg(long, default_value_t = 16)]
    max_batch: usize,
    /// How long the first image of a batch waits for others, in milliseconds.
    #[arg(long, default_value_t = 5)]
    max_delay_ms: u64,
    /// Most images waiting for the network; more are answered 503 with Retry-After.
    #[arg(long, default_value_t = 64)]
    queue: usize,
    /// Longest a request may take, in milliseconds (504 after).
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
    /// Largest request body (413 above), e.g. 32M.
    #[arg(long, value_parser = parse_count, default_value = "32M")]
    max_body: u64,
    /// Most images decoded at once (default: the number of cores).
    #[arg(long)]
    decoders: Option<usize>,
    /// A file holding the bearer token requests must carry (the page and health checks stay open).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// The name the model is served under (KServe's model_name; default: the network's name).
    #[arg(long)]
    name: Option<String>,
    #[command(flatten)]
    preprocess: PreprocessArgs,
}

impl ServeArgs {
    /// The server's settings, checked.
    fn config(&self) -> Result<ServeConfig> {
        anyhow::ensure!(self.max_batch >= 1, "--max-batch must be at least 1");
        anyhow::ensure!(self.queue >= 1, "--queue must be at least 1");
        anyhow::ensure!(self.timeout_ms >= 1, "--timeout-ms must be at least 1");
        let token = match &self.token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("{}: cannot read the token", path.display()))?;
                let token = text.trim().to_string();
                anyhow::ensure!(
                    !token.is_empty(),
                    "{}: the token file is empty",
                    path.display()
                );
                Some(token)
            }
            None => None,
        };
        let defaults = ServeConfig::default();
        Ok(ServeConfig {
            max_batch: self.max_batch,
            max_delay: Duration::from_millis(self.max_delay_ms),
            queue: self.queue,
            timeout: Duration::from_millis(self.timeout_ms),
            max_body: usize::try_from(self.max_body).unwrap_or(usize::MAX),
            decoders: self.decoders.unwrap_or(defaults.decoders).max(1),
            token,
        })
    }
}

/// Runs `effnet serve` until Ctrl-C or SIGTERM.
pub fn run(args: &ServeArgs) -> Result<()> {
    crate::memory::map_large_allocations();
    let config = args.config()?;
    let weights = args.weights.load()?;
    let (preprocessing, resolution) = args.preprocess.preprocessing(&weights.config)?;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| weights.config.name.clone());
    let model = Model::new(&name, weights, preprocessing, resolution)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the server's runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&args.addr)
            .await
            .with_context(|| format!("cannot listen on {}", args.addr))?;
        let addr = listener.local_addr()?;
        eprintln!("effnet: serving {name} on http://{addr}/ (Ctrl-C to stop)");
        serve(model, config, listener, shutdown_signal()).await?;
        eprintln!("effnet: stopped");
        anyhow::Ok(())
    })
}
