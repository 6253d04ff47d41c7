//! `pullsecretd completions SHELL` and `pullsecretd man`: generated from the clap definition in
//! `crate::cli`, so the completions and pages describe exactly this binary's flags.
use std::path::Path;

use anyhow::Context as _;
use clap::CommandFactory as _;

use crate::cli::{Cli, Failure};

pub(crate) fn completions(shell: clap_complete::Shell) -> Result<(), Failure> {
    let mut command = Cli::command();
    // Into a buffer first: clap_complete panics on a failed write (say a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "pullsecretd", &mut script);
    std::io::Write::write_all(&mut std::io::stdout().lock(), &script)
        .context("writing the completion script")
        .map_err(|error| Failure { status: 1, error })
}

/// Every page into `dir` (pullsecretd.1, pullsecretd-plan.1, …), or the main page on stdout.
pub(crate) fn man_pages(dir: Option<&Path>) -> Result<(), Failure> {
    let command = Cli::command();
    let written = match dir {
        Some(dir) => std::fs::create_dir_all(dir)
            .with_context(|| format!("creating {}", dir.display()))
            .and_then(|()| {
                clap_mangen::generate_to(command, dir)
                    .with_context(|| format!("writing man pages into {}", dir.display()))
            }),
        None => clap_mangen::Man::new(command)
            .render(&mut std::io::stdout())
            .context("writing the man page"),
    };
    written.map_err(|error| Failure { status: 1, error })
}
