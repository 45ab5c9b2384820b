//! `effnet`: EfficientNet and compound model scaling from the command line.

mod commands;
mod model_args;
mod output;
mod plot;
mod summary;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// EfficientNet and compound model scaling: architecture, exact accounting, budget solver.
#[derive(Debug, Parser)]
#[command(name = "effnet", version, about)]
struct Cli {
    /// Print one JSON object instead of tables.
    #[arg(long, global = true)]
    json: bool,
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Info(args) => commands::info::run(args, cli.json),
        Command::Scale(args) => commands::scale::run(args, cli.json),
        Command::Fit(args) => commands::fit::run(args, cli.json),
        Command::Compare(args) => commands::compare::run(args, cli.json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("effnet: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
