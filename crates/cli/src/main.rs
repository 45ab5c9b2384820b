//! `effnet`: EfficientNet and compound model scaling from the command line.

mod commands;
mod feature_args;
mod inference;
mod memory;
mod model_args;
mod output;
mod plot;
mod run_args;
mod summary;
mod weights_args;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// EfficientNet and compound model scaling: architecture, exact accounting, budget solver, inference,
/// training.
#[derive(Debug, Parser)]
#[command(name = "effnet", version, about)]
struct Cli {
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Worker threads (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// At the end, print this process's peak resident memory to stderr.
    #[arg(long, global = true)]
    report_memory: bool,
    /// Largest image to decode, in pixels (checked in the file's header before decoding), e.g. 250M.
    #[arg(long, global = true, value_parser = model_args::parse_count, default_value = "100M")]
    max_pixels: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Architecture (the paper's Table 1) and exact costs of a named or custom network.
    Info(commands::info::InfoArgs),
    /// A compound-scaled network (`--phi`), with the formula's MACs prediction next to the real one.
    Scale(commands::scale::ScaleArgs),
    /// The largest compound-scaled network that fits MACs / memory / parameter budgets.
    Fit(commands::fit::FitArgs),
    /// Named networks side by side, optionally plotted as accuracy against MACs.
    Compare(commands::compare::CompareArgs),
    /// Classify images and folders with pretrained weights.
    Predict(commands::predict::PredictArgs),
    /// Write pooled features of images (.npy or .json) for transfer learning and retrieval.
    Embed(commands::embed::EmbedArgs),
    /// Inference speed on random weights: median latency per batch and images per second.
    Bench(commands::bench::BenchArgs),
    /// Fine-tune pretrained weights or train from scratch on a folder of labelled images.
    Train(Box<commands::train::TrainArgs>),
    /// The paper's grid search for alpha, beta, gamma, training every candidate on your images.
    Search(Box<commands::search::SearchArgs>),
    /// Accuracy, top-5, per-class accuracy and confusion matrix of weights on labelled images.
    Eval(commands::eval::EvalArgs),
    /// Cut a few large images (one per class) into a train/val dataset of patches.
    Patches(commands::patches::PatchesArgs),
    /// Convert timm / torchvision / lukemelas / TF-named weights into effnet safetensors with metadata.
    Convert(commands::convert::ConvertArgs),
    /// Write weights as an ONNX model that runs in any ONNX runtime (no custom operators).
    Export(Box<commands::export::ExportArgs>),
    /// Grad-CAM / Grad-CAM++ heat maps: which parts of an image made the network choose a class.
    Explain(Box<commands::explain::ExplainArgs>),
    /// An HTTP server for predictions, explanations and embeddings, with dynamic batching and a web page.
    Serve(Box<commands::serve::ServeArgs>),
    /// Multi-scale feature maps (strides 2 to 32) of images, for detection and segmentation backbones.
    Features(commands::features::FeaturesArgs),
    /// The weights known by name (hf:, torchvision:), and the local download caches.
    Weights(commands::weights::WeightsArgs),
}

impl Command {
    /// Whether the command trains networks (`train`, `search`, `bench --train`).
    fn trains(&self) -> bool {
        match self {
            Command::Train(_) | Command::Search(_) => true,
            Command::Bench(args) => args.train,
            _ => false,
        }
    }
}

/// Lets `effnet ... | head` end quietly when the reader goes away, as other command-line tools do, instead of
/// failing on a broken pipe.
fn restore_default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: setting a signal disposition to its default at start-up, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// The most worker threads per core `--threads` accepts: more only adds switching between them.
const MAX_THREADS_PER_CORE: usize = 8;

fn main() -> ExitCode {
    restore_default_sigpipe();
    let cli = Cli::parse();
    if cli.command.trains() {
        // Before any thread exists: training reuses its large buffers instead of faulting them in again.
        effnet_train::allocator::keep_freed_memory();
    }
    if let Some(threads) = cli.threads {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        if threads > MAX_THREADS_PER_CORE * cores {
            eprintln!(
                "effnet: error: --threads {threads} is more than {MAX_THREADS_PER_CORE} per core on this machine's {cores} cores"
            );
            return ExitCode::FAILURE;
        }
        if threads == 0
            || rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build_global()
                .is_err()
        {
            eprintln!("effnet: error: --threads must be at least 1");
            return ExitCode::FAILURE;
        }
    }
    effnet_data::set_max_pixels(cli.max_pixels);
    // An instruction set forced through EFFNET_ISA that this machine cannot run is an error up front.
    if let Err(e) = effnet_engine::isa::active() {
        eprintln!("effnet: error: {e}");
        return ExitCode::FAILURE;
    }
    let result = match &cli.command {
        Command::Info(args) => commands::info::run(args, cli.json),
        Command::Scale(args) => commands::scale::run(args, cli.json),
        Command::Fit(args) => commands::fit::run(args, cli.json),
        Command::Compare(args) => commands::compare::run(args, cli.json),
        Command::Predict(args) => commands::predict::run(args, cli.json),
        Command::Embed(args) => commands::embed::run(args, cli.json),
        Command::Convert(args) => commands::convert::run(args, cli.json),
        Command::Bench(args) => commands::bench::run(args, cli.json),
        Command::Train(args) => commands::train::run(args, cli.json),
        Command::Eval(args) => commands::eval::run(args, cli.json),
        Command::Search(args) => commands::search::run(args, cli.json),
        Command::Patches(args) => commands::patches::run(args),
        Command::Export(args) => commands::export::run(args, cli.json),
        Command::Explain(args) => commands::explain::run(args, cli.json),
        Command::Serve(args) => commands::serve::run(args),
        Command::Features(args) => commands::features::run(args, cli.json),
        Command::Weights(args) => commands::weights::run(args, cli.json),
    };
    if cli.report_memory {
        memory::report_peak();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("effnet: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
