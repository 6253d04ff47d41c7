//! `pullsecretd check-config FILE` (or `--config FILE`).
use std::path::PathBuf;

use pullsecretd::config::Config;
use pullsecretd::render::counted;

use crate::cli::{Failure, bad_input};

pub(crate) fn check_config(file: Option<PathBuf>) -> Result<(), Failure> {
    // clap requires one of the two spellings; this is only the type saying so.
    let file = file.ok_or_else(|| bad_input(anyhow::anyhow!("name the config file")))?;
    let config = Config::load(&file).map_err(bad_input)?;
    println!(
        "{}: valid ({}, {}, {})",
        file.display(),
        counted(config.registries.len(), "registry", "registries"),
        counted(config.pull_secrets.len(), "pull secret", "pull secrets"),
        counted(config.image_pullers.len(), "image puller", "image pullers")
    );
    Ok(())
}
